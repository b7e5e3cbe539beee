"""chorus's token estimate of a PDF or an image in a request is an upper bound of what the stub bills for it:
the stub reads the document with its own code and bills it by its own rule (page text in its own tokenizer +
a page image), written from Anthropic's docs, never from chorus's tables. What the document adds is the stub's
count of the request less its count of the same request without the document (the prompt's own text is
estimated by chorus's text rule, which is another matter: issue 22)."""

from __future__ import annotations

import dataclasses
from typing import Any

import anthropic
import pytest

from chorus.documents import read_document
from chorus.native import as_input
from providers.anthropic_provider import message_body
from tests import docfiles
from workflows.calls import Attachment
from workflows.sectioning import Section, section_request
from workflows.tokens import attachment_tokens
from workflows.voting import Voter, vote_request

pytestmark = pytest.mark.integration

DIGITS = "\n".join(" ".join(f"{i * 37 % 1000:03d}.{j}" for j in range(12)) for i in range(45))
DOCUMENTS = {
    "text pdf": lambda: docfiles.text_pdf(4),
    "scanned pdf": lambda: docfiles.scanned_pdf(["Invoice 42, total 1,250.00 EUR", "Page two of the scan"]),
    "table of digits": lambda: docfiles.text_pdf([DIGITS, DIGITS]),
    "large png": lambda: docfiles.png("A large picture", size=(3000, 2000)),
    "small jpeg": lambda: docfiles.jpeg("A receipt", size=(300, 500)),
}
MODELS = ["claude-haiku-5-5", "claude-haiku-4-5", "claude-sonnet-5-5"]


def counted(stub: Any, body: dict[str, Any]) -> int:
    client = anthropic.Anthropic(api_key="test-key", base_url=stub.base_url, max_retries=0)
    return client.messages.count_tokens(model=body["model"], system=body["system"],
                                        messages=body["messages"]).input_tokens


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
@pytest.mark.parametrize("model", MODELS)
def test_the_estimate_of_a_document_is_at_least_what_the_stub_bills_for_it(stub, name, model):
    suffix = ".pdf" if "pdf" in name else ".png" if "png" in name else ".jpg"
    document = as_input(read_document(DOCUMENTS[name](), "doc" + suffix))
    assert isinstance(document, Attachment)
    requests = [vote_request(Voter(0, model, "direct"), ["invoice", "receipt", "other"], document),
                section_request(model, "Summarize.", Section(0, "pages 1-2", 1, 2), document, 1)]
    for request in requests:
        without = dataclasses.replace(request, attachments=())
        billed = counted(stub, message_body(request)) - counted(stub, message_body(without))
        estimate = attachment_tokens(document, model)
        assert billed > 0
        assert estimate >= billed, (name, model, estimate, billed)
        # An upper bound, not a wild one: within 2.5x of the stub's count.
        assert estimate <= 2.5 * billed, (name, model, estimate, billed)
