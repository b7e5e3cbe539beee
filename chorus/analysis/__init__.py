"""Cost and accuracy analysis on stored runs: estimate, measure, compare, advise, export, report."""
