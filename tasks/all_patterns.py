"""Every pattern's worker module, imported: each registers its entry in `tasks.patterns` as it is.

Import this module (not the pattern modules one by one) where the registry is read outside a
pattern's own tasks: the reaper, the batch lane, the batch dispatch task and the client.
To add a pattern, import its module here.
"""

from tasks import orchestrate, section, vote

PATTERN_MODULES = (vote, section, orchestrate)
