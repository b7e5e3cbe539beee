"""Document (PDF, plain text) and image blocks for the stub, written from Anthropic's documentation.

Sources, read 2026-12: "PDF support" (https://platform.claude.com/docs/en/build-with-claude/pdf-support:
requirements, "How PDF support works", "Estimate your costs"), "Vision" (build-with-claude/vision:
image size limits, "Evaluate image size", "Calculate image costs"), "Citations" and "Structured
outputs" (the two do not combine), "Token counting" (count_tokens takes PDFs and images as base64),
the model overviews (context windows) and the block types of the anthropic SDK 2.17
(`DocumentBlockParam`, `ImageBlockParam`, `ImageDimensionsTooLargeErrorDetails`).

The blocks a user message may carry, besides text:

* `{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": ...}}`,
  or `{"type": "file", "file_id": ...}` (a PDF or text file uploaded through the Files API, see
  `files`), or `{"type": "text", "media_type": "text/plain", "data": ...}`, or `{"type": "content",
  "content": str | [text and image blocks]}`; with optional `title`, `context`, `citations`, `cache_control`;
* `{"type": "image", "source": {"type": "base64", "media_type": "image/png" | "image/jpeg" |
  "image/gif" | "image/webp", "data": ...}}` or `{"type": "file", "file_id": ...}`.

What a request is refused for (400 `invalid_request_error`; checked in `MediaReader.check`): bad
base64; a media type the block does not take (or image bytes that are not of the stated type); a PDF
that does not parse or is encrypted ("The PDF specified was not valid"); a `file_id` that does not
exist (deleted, never uploaded, or expired); a `url` source (the stub has no network); an image over
5 MB (`MAX_IMAGE_BYTES`, of base64 data) or with a side over 8000 px (`MAX_IMAGE_SIDE`; 2000 px when
the request holds more than 20 images), answered with the SDK's `image_dimensions_too_large` details;
more PDF pages in the request than the model takes (`max_pdf_pages`: 600, or 100 when the model's
context window is under 1M tokens, `models.ModelTraits.context_window`); a document or image in an
assistant message; `citations.enabled` on a document together with `output_config.format`.

The stub's token rule (its own, from the docs' description, never chorus's estimate):

* an image costs `ceil(w * h / PIXELS_PER_TOKEN)` tokens, at the size the model sees it: scaled
  down, keeping its aspect ratio, until the long edge is at most `MAX_LONG_EDGE` px and the area at
  most `MAX_PIXELS` (dimensions read from the PNG IHDR, JPEG SOFn, GIF logical screen or WebP
  VP8/VP8L/VP8X header, parsed here);
* a PDF page costs the tokens of its extracted text (pypdf `extract_text`, counted by
  `tokenizer.count_text` in the model's tokenizer) plus those of an image of the page: the page's
  mediabox in points scaled so that its long edge is `MAX_LONG_EDGE` px, then the image rule (about
  1,530 tokens for a Letter or A4 page);
* a plain-text document costs its text; a document's `title` and `context` cost their text too.

What the stub's "model" (`providers.offline.answer`) reads of a block, in the block's place among
the message's text: `<document>\\n` + reading + `\\n</document>\\n`, the reading being a PDF's page texts
joined by blank lines, a text document's text, or, for an image and for a PDF page without a text
layer, the stub's stand-in for vision. Claude reads page images; the stub's "vision" reads the text
that a test wrote into the image's own metadata: a PNG `tEXt` / `zTXt` / `iTXt` chunk with keyword
`Description` (or `Comment`), a JPEG `COM` segment, a GIF comment extension. On a page without text
it reads the page's JPEG (DCTDecode) images that way (pypdf hands the JPEG bytes unchanged). An image
with no such text reads as `[an image of W×H pixels with no legible text]`.

Identical content is parsed once (`_PARSED`, by SHA-256) and hashed into the prompt-cache key by its
digest, so a document sent as base64 and the same bytes sent by `file_id` make the same prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pypdf

from chorus.testing.stub.models import traits
from chorus.testing.stub.tokenizer import count_text

# Vision: "Calculate image costs" and "Evaluate image size".
PIXELS_PER_TOKEN = 750
MAX_LONG_EDGE = 1568
MAX_PIXELS = 1_150_000
MAX_IMAGE_SIDE = 8000
MANY_IMAGES = 20  # more images than this in one request: each side at most MANY_IMAGES_MAX_SIDE
MANY_IMAGES_MAX_SIDE = 2000
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # of base64 data (of the file's bytes for a file source)
# PDF support: "Maximum pages per request: 600 (100 when the request's context window is under 1M tokens)".
MAX_PDF_PAGES = 600
MAX_PDF_PAGES_UNDER_1M = 100
ONE_MILLION = 1_000_000
# The Messages and Token Counting APIs' request size limit ("Request size limits"), a stub knob.
MAX_REQUEST_BYTES = 32 * 1024 * 1024

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
PDF = "application/pdf"
TEXT = "text/plain"
DOCUMENT_MEDIA_TYPES = (PDF, TEXT)
MEDIA_BLOCKS = ("document", "image")
TEXT_KEYWORDS = ("description", "comment")  # PNG text chunks the stub's "vision" reads, by keyword
NO_TEXT = "[an image of {w}×{h} pixels with no legible text]"
PARSED_CACHE_SIZE = 64

FileLookup = Callable[[str], "StoredBytes | None"]


class MediaError(Exception):
    """A request the API refuses because of a document or image block: status, message, details."""

    def __init__(self, message: str, status: int = 400, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


@dataclass(frozen=True)
class StoredBytes:
    """A Files API file as a message sees it (see `files.FileStore.for_message`)."""

    file_id: str
    mime_type: str
    data: bytes


# ----- images --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageInfo:
    media_type: str
    width: int
    height: int
    text: str | None  # the text written in its metadata: the stub's stand-in for vision


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The size the model sees an image at: scaled down (aspect kept) to a long edge of at most
    `MAX_LONG_EDGE` px and an area of at most `MAX_PIXELS`; a smaller image keeps its size."""
    if width <= 0 or height <= 0:
        return 0, 0
    scale = min(1.0, MAX_LONG_EDGE / max(width, height), math.sqrt(MAX_PIXELS / (width * height)))
    if scale >= 1.0:
        return width, height
    # A hair over the floor: 3000 * (1568 / 3000) is 1567.9999... in floating point.
    return max(1, math.floor(width * scale + 1e-9)), max(1, math.floor(height * scale + 1e-9))


def image_tokens(width: int, height: int) -> int:
    w, h = fitted_size(width, height)
    return math.ceil(w * h / PIXELS_PER_TOKEN)


def page_image_size(width_pt: float, height_pt: float) -> tuple[int, int]:
    """The image of a PDF page: its mediabox (points) scaled so that the long edge is MAX_LONG_EDGE px."""
    if width_pt <= 0 or height_pt <= 0:
        return 0, 0
    scale = MAX_LONG_EDGE / max(width_pt, height_pt)
    return max(1, round(width_pt * scale)), max(1, round(height_pt * scale))


def sniff_image(data: bytes) -> str | None:
    """The image media type of these bytes by their signature, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def read_image(data: bytes) -> ImageInfo:
    """Dimensions and metadata text of a PNG, JPEG, GIF or WebP image, from its own header.
    ValueError when the bytes are none of those or the header is cut short."""
    kind = sniff_image(data)
    try:
        if kind == "image/png":
            return _png(data)
        if kind == "image/jpeg":
            return _jpeg(data)
        if kind == "image/gif":
            return _gif(data)
        if kind == "image/webp":
            return _webp(data)
    except (struct.error, IndexError, zlib.error) as exc:
        raise ValueError(f"the {kind} header is damaged ({exc})") from None
    raise ValueError("the data is not a PNG, JPEG, GIF or WebP image")


def _keyword_text(found: dict[str, str]) -> str | None:
    for keyword in TEXT_KEYWORDS:
        if found.get(keyword, "").strip():
            return found[keyword].strip()
    return None


def _png(data: bytes) -> ImageInfo:
    pos = 8
    width = height = -1
    found: dict[str, str] = {}
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if len(chunk) < length:
            break
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword, _, rest = chunk.partition(b"\0")
            name = keyword.decode("latin-1").strip().lower()
            if kind == b"tEXt":
                found.setdefault(name, rest.decode("latin-1"))
            elif kind == b"zTXt":
                found.setdefault(name, zlib.decompress(rest[1:]).decode("latin-1"))
            else:
                compressed, text = rest[0], rest[2:]
                text = text.split(b"\0", 2)[-1]  # past the language tag and the translated keyword
                found.setdefault(name, (zlib.decompress(text) if compressed else text).decode("utf-8", "replace"))
        elif kind == b"IEND":
            break
        pos += 12 + length
    if width <= 0 or height <= 0:
        raise ValueError("the PNG has no IHDR chunk")
    return ImageInfo("image/png", width, height, _keyword_text(found))


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> ImageInfo:
    pos = 2
    size: tuple[int, int] | None = None
    comments: list[str] = []
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or start of scan: the header is over
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        segment = data[pos + 4:pos + 2 + length]
        if marker in _SOF:
            height, width = struct.unpack(">HH", segment[1:5])
            size = (width, height)
        elif marker == 0xFE:
            comments.append(segment.decode("utf-8", "replace"))
        pos += 2 + length
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise ValueError("the JPEG has no SOF segment before its scan")
    text = "\n".join(c.strip() for c in comments if c.strip()) or None
    return ImageInfo("image/jpeg", size[0], size[1], text)


def _sub_blocks(data: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    while True:
        n = data[pos]
        pos += 1
        if n == 0:
            return bytes(out), pos
        out += data[pos:pos + n]
        pos += n


def _gif(data: bytes) -> ImageInfo:
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    comments: list[str] = []
    while pos < len(data):
        introducer = data[pos]
        if introducer == 0x21:  # extension
            label = data[pos + 1]
            block, pos = _sub_blocks(data, pos + 2)
            if label == 0xFE:
                comments.append(block.decode("latin-1"))
        elif introducer == 0x2C:  # image descriptor, local color table, LZW code size, data
            packed = data[pos + 9]
            pos += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0) + 1
            _, pos = _sub_blocks(data, pos)
        else:  # 0x3B trailer, or anything the stub does not read
            break
    if width <= 0 or height <= 0:
        raise ValueError("the GIF's logical screen is empty")
    text = "\n".join(c.strip() for c in comments if c.strip()) or None
    return ImageInfo("image/gif", width, height, text)


def _webp(data: bytes) -> ImageInfo:
    kind, body = data[12:16], data[20:]
    if kind == b"VP8 ":
        if body[3:6] != b"\x9d\x01\x2a":
            raise ValueError("the VP8 frame has no start code")
        width, height = struct.unpack("<HH", body[6:10])
        width, height = width & 0x3FFF, height & 0x3FFF
    elif kind == b"VP8L":
        if body[0] != 0x2F:
            raise ValueError("the VP8L bitstream has no signature")
        (bits,) = struct.unpack("<I", body[1:5])
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8X":
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
    else:
        raise ValueError(f"unknown WebP chunk {kind!r}")
    if width <= 0 or height <= 0:
        raise ValueError("the WebP image is empty")
    return ImageInfo("image/webp", width, height, None)


# ----- PDFs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PdfPage:
    text: str
    width_pt: float
    height_pt: float
    images: tuple[tuple[int, int, str | None], ...]  # (width, height, metadata text) of its JPEGs

    def image_size(self) -> tuple[int, int]:
        return page_image_size(self.width_pt, self.height_pt)

    def tokens(self, model: str | None) -> int:
        return count_text(self.text, model) + image_tokens(*self.image_size())

    def reading(self) -> str:
        if self.text:
            return self.text
        return "\n".join(text if text else NO_TEXT.format(w=w, h=h) for w, h, text in self.images)


def read_pdf(data: bytes) -> tuple[PdfPage, ...]:
    """The pages of a PDF; MediaError (400) when it does not parse or is encrypted."""
    if b"%PDF-" not in data[:1024]:  # the header may follow a little junk, as readers allow
        raise MediaError("The PDF specified was not valid: it has no %PDF- header.")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise MediaError("The PDF specified was not valid: it is encrypted (password-protected PDFs are "
                             "not supported).")
        pages = []
        for page in reader.pages:
            box = page.mediabox
            text = (page.extract_text() or "").strip()  # pypdf ends a page's text with a line break
            images = () if text else tuple(_page_jpegs(page))
            pages.append(PdfPage(text, float(box.width), float(box.height), images))
    except MediaError:
        raise
    except Exception as exc:  # pypdf raises many kinds on a damaged file: each is a PDF that does not parse
        raise MediaError(f"The PDF specified was not valid: {type(exc).__name__}: {exc}") from None
    if not pages:
        raise MediaError("The PDF specified was not valid: it has no pages.")
    return tuple(pages)


def _resolved(value: Any) -> Any:
    return value.get_object() if hasattr(value, "get_object") else value


def _page_jpegs(page: Any, depth: int = 0) -> Iterator[tuple[int, int, str | None]]:
    """The images of a page (and of its form XObjects), with the text of the COM segments of the JPEG
    (DCTDecode) ones. An image the stub cannot read is left out: the page is still a page."""
    resources = _resolved(page.get("/Resources"))
    xobjects = _resolved(resources.get("/XObject")) if resources is not None else None
    if xobjects is None or depth > 4:
        return
    for ref in xobjects.values():
        try:
            obj = _resolved(ref)
            subtype = _resolved(obj.get("/Subtype"))
            if subtype == "/Form":
                yield from _page_jpegs(obj, depth + 1)
                continue
            if subtype != "/Image":
                continue
            width, height = int(_resolved(obj.get("/Width", 0))), int(_resolved(obj.get("/Height", 0)))
            filters = _resolved(obj.get("/Filter"))
            filters = [filters] if isinstance(filters, str) else [_resolved(f) for f in filters or []]
            text = None
            if filters and filters[-1] == "/DCTDecode":
                text = read_image(obj.get_data()).text  # pypdf leaves DCT data as the JPEG file
        except Exception:  # a damaged image is one the stub's "vision" cannot read
            continue
        yield width, height, text


# ----- parsed content ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Content:
    """A document or image as the model reads it."""

    kind: str  # "pdf", "text" or "image"
    digest: str
    pages: tuple[PdfPage, ...] = ()
    text: str = ""
    image: ImageInfo | None = None
    parts: tuple[ImageInfo, ...] = ()  # the images of a custom-content document (their reading is in `text`)

    def tokens(self, model: str | None) -> int:
        if self.kind == "pdf":
            return sum(p.tokens(model) for p in self.pages)
        if self.kind == "image" and self.image is not None:
            return image_tokens(self.image.width, self.image.height)
        return count_text(self.text, model) + sum(image_tokens(i.width, i.height) for i in self.parts)

    def reading(self) -> str:
        if self.kind == "pdf":
            readings = (p.reading() for p in self.pages)
            return "\n\n".join(read for read in readings if read)  # a blank page reads as nothing
        if self.kind == "image" and self.image is not None:
            return self.image.text or NO_TEXT.format(w=self.image.width, h=self.image.height)
        return self.text


_PARSED: OrderedDict[str, Content] = OrderedDict()
_INTERNED: OrderedDict[str, str] = OrderedDict()  # digest -> the first base64 string seen with it
_PARSED_LOCK = threading.Lock()


def _remember(key: str, make: Callable[[], Content]) -> Content:
    with _PARSED_LOCK:
        hit = _PARSED.get(key)
        if hit is not None:
            _PARSED.move_to_end(key)
            return hit
    content = make()  # outside the lock: a long PDF parses while other requests go on
    with _PARSED_LOCK:
        _PARSED[key] = content
        while len(_PARSED) > PARSED_CACHE_SIZE:
            _PARSED.popitem(last=False)
    return content


def _intern(digest: str, data: str) -> str:
    """One string object for equal base64 data, so that N logged requests with the same PDF hold it once."""
    with _PARSED_LOCK:
        kept = _INTERNED.setdefault(digest, data)
        _INTERNED.move_to_end(digest)
        while len(_INTERNED) > PARSED_CACHE_SIZE:
            _INTERNED.popitem(last=False)
        return kept


def pdf_content(data: bytes) -> Content:
    digest = hashlib.sha256(data).hexdigest()
    return _remember("pdf:" + digest, lambda: Content("pdf", digest, pages=read_pdf(data)))


def text_content(text: str) -> Content:
    return Content("text", hashlib.sha256(text.encode()).hexdigest(), text=text)


def image_content(data: bytes) -> Content:
    """ValueError when the bytes are not a readable image."""
    digest = hashlib.sha256(data).hexdigest()
    return _remember("image:" + digest, lambda: Content("image", digest, image=read_image(data)))


# ----- the limits that depend on the model -----------------------------------------------------------
def context_window(model: str) -> int:
    """The stub's context window of a model id (200K for an id it cannot read)."""
    found = traits(model)
    return found.context_window if found is not None else 200_000


def max_pdf_pages(model: str) -> int:
    return MAX_PDF_PAGES if context_window(model) >= ONE_MILLION else MAX_PDF_PAGES_UNDER_1M


# ----- one request ---------------------------------------------------------------------------------
class MediaReader:
    """Reads the document and image blocks of one request: `check` validates them all (MediaError),
    then `tokens` / `digest` (the tokenizer's and the cache's view) and `reading` (the model's) use
    what it parsed. `files` resolves a `file` source; None refuses every file source with `file_refusal`
    (count_tokens takes PDFs and images only as base64)."""

    def __init__(self, files: FileLookup | None = None, file_refusal: str | None = None) -> None:
        self._files = files
        self._file_refusal = file_refusal
        self._parsed: dict[int, Content] = {}
        self.pdf_pages = 0
        self.images = 0

    # The tokenizer's MediaReader protocol.
    def tokens(self, block: dict[str, Any], model: str | None) -> int | None:
        content = self._parsed.get(id(block))
        if content is None:
            return None
        extra = sum(count_text(str(block[k]), model) for k in ("title", "context") if isinstance(block.get(k), str))
        return content.tokens(model) + extra

    def digest(self, block: dict[str, Any]) -> str | None:
        content = self._parsed.get(id(block))
        return content.digest if content is not None else None

    def reading(self, content: Any) -> str:
        """A message's content as the model reads it: its text blocks' text, and each document or image
        block, in its place, as `<document>\\n...\\n</document>\\n`."""
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            return ""
        out = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                out.append(str(block.get("text", "")))
            elif id(block) in self._parsed:
                out.append("<document>\n" + self._parsed[id(block)].reading() + "\n</document>\n")
        return "".join(out)

    def check(self, body: dict[str, Any]) -> None:
        """Validate and parse every document and image block of a request (MediaError on the first
        problem, as Anthropic answers it). Content already parsed (by SHA-256) is not parsed again."""
        self._parsed.clear()
        self.pdf_pages = self.images = 0
        model = str(body.get("model", ""))
        images: list[tuple[str, ImageInfo]] = []
        citations = False
        for i, message in enumerate(body.get("messages") or []):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for j, block in enumerate(content):
                if not isinstance(block, dict) or block.get("type") not in MEDIA_BLOCKS:
                    continue
                where = f"messages.{i}.content.{j}"
                if message.get("role") != "user":
                    raise MediaError(f"{where}: {block['type']} blocks are only allowed in user messages")
                if block["type"] == "image":
                    parsed = self._image(block, where)
                    self.images += 1
                    assert parsed.image is not None
                    images.append((where, parsed.image))
                else:
                    parsed = self._document(block, where, images)
                    self.pdf_pages += len(parsed.pages)
                    citations = citations or bool(isinstance(block.get("citations"), dict)
                                                  and block["citations"].get("enabled"))
                self._parsed[id(block)] = parsed
        if citations and isinstance(body.get("output_config"), dict) and body["output_config"].get("format"):
            raise MediaError("citations cannot be used together with structured outputs: a document has "
                             "citations.enabled and the request sets output_config.format; remove one of them")
        limit = max_pdf_pages(model)
        if self.pdf_pages > limit:
            window = "1M tokens" if limit == MAX_PDF_PAGES else "under 1M tokens"
            raise MediaError(f"A maximum of {limit} PDF pages may be provided in one request (the context "
                             f"window of {model} is {window}); this request has {self.pdf_pages} pages")
        side = MANY_IMAGES_MAX_SIDE if len(images) > MANY_IMAGES else MAX_IMAGE_SIDE
        over = [(where, info) for where, info in images if max(info.width, info.height) > side]
        if over:
            where, info = over[0]
            many = f" (the limit for a request with more than {MANY_IMAGES} images)" if side != MAX_IMAGE_SIDE else ""
            raise MediaError(f"{where}.image.source: At least one of the image dimensions exceed max allowed "
                             f"size: {side} pixels{many}; this image is {info.width}×{info.height}",
                             details={"error_code": "image_dimensions_too_large", "max_side_length_pixels": side,
                                      "paths": [w for w, _ in over]})

    # ----- sources ---------------------------------------------------------------------------------
    def _source(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        source = block.get("source")
        if not isinstance(source, dict):
            raise MediaError(f"{where}.source: Field required")
        kind = source.get("type")
        if kind == "url":
            raise MediaError(f"{where}.source: the stub cannot fetch URLs (it has no network); send the "
                             f"{block['type']} as base64 or upload it through the Files API")
        return source

    def _file(self, source: dict[str, Any], where: str) -> StoredBytes:
        file_id = source.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise MediaError(f"{where}.source.file_id: Field required")
        if self._files is None:
            raise MediaError(self._file_refusal or f"{where}.source: file sources are not accepted here")
        stored = self._files(file_id)
        if stored is None:
            raise MediaError(f"{where}.source.file_id: file not found: {file_id} (it was never uploaded, has "
                             "been deleted, or has expired)")
        return stored

    @staticmethod
    def _base64(source: dict[str, Any], where: str) -> tuple[bytes, str]:
        data = source.get("data")
        if not isinstance(data, str):
            raise MediaError(f"{where}.source.data: Input should be a valid string (base64)")
        try:
            decoded = base64.b64decode(data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise MediaError(f"{where}.source.data: invalid base64 data") from None
        return decoded, data

    def _image(self, block: dict[str, Any], where: str) -> Content:
        source = self._source(block, where)
        kind = source.get("type")
        if kind == "base64":
            media_type = source.get("media_type")
            if media_type not in IMAGE_MEDIA_TYPES:
                raise MediaError(f"{where}.source.media_type: Input should be one of {', '.join(IMAGE_MEDIA_TYPES)}; "
                                 f"got {media_type!r}")
            data = source.get("data")
            if isinstance(data, str) and len(data) > MAX_IMAGE_BYTES:
                raise MediaError(f"{where}.source.base64: image exceeds 5 MB maximum: {len(data)} bytes > "
                                 f"{MAX_IMAGE_BYTES} bytes")
            raw, text = self._base64(source, where)
        elif kind == "file":
            stored = self._file(source, where)
            media_type = stored.mime_type
            if media_type not in IMAGE_MEDIA_TYPES:
                raise MediaError(f"{where}.source: file {stored.file_id} has mime_type {media_type}; an image "
                                 f"block takes {', '.join(IMAGE_MEDIA_TYPES)}")
            if len(stored.data) > MAX_IMAGE_BYTES:
                raise MediaError(f"{where}.source: image exceeds 5 MB maximum: {len(stored.data)} bytes > "
                                 f"{MAX_IMAGE_BYTES} bytes")
            raw, text = stored.data, ""
        else:
            raise MediaError(f"{where}.source.type: Input should be 'base64', 'url' or 'file'; got {kind!r}")
        actual = sniff_image(raw)
        if actual != media_type:
            found = f"it is {actual}" if actual else "it is not an image the API reads"
            raise MediaError(f"{where}.source: Image does not match the provided media type {media_type} ({found})")
        try:
            content = image_content(raw)
        except ValueError as exc:
            raise MediaError(f"{where}.source: Could not process image: {exc}") from None
        if text:
            source["data"] = _intern(content.digest, text)
        return content

    def _document(self, block: dict[str, Any], where: str, images: list[tuple[str, ImageInfo]]) -> Content:
        source = self._source(block, where)
        kind = source.get("type")
        for key in ("title", "context"):
            if block.get(key) is not None and not isinstance(block[key], str):
                raise MediaError(f"{where}.{key}: Input should be a valid string")
        if kind == "base64":
            if source.get("media_type") != PDF:
                raise MediaError(f"{where}.source.media_type: Input should be 'application/pdf'; got "
                                 f"{source.get('media_type')!r}")
            raw, text = self._base64(source, where)
            content = self._pdf(raw, where)
            source["data"] = _intern(content.digest, text)
            return content
        if kind == "text":
            if source.get("media_type", TEXT) != TEXT:
                raise MediaError(f"{where}.source.media_type: Input should be 'text/plain'; got "
                                 f"{source.get('media_type')!r}")
            if not isinstance(source.get("data"), str):
                raise MediaError(f"{where}.source.data: Input should be a valid string")
            return text_content(source["data"])
        if kind == "content":
            return self._content_source(source, where, images)
        if kind == "file":
            stored = self._file(source, where)
            if stored.mime_type == PDF:
                return self._pdf(stored.data, where)
            if stored.mime_type.startswith(TEXT):
                return text_content(stored.data.decode("utf-8", "replace"))
            raise MediaError(f"{where}.source: file {stored.file_id} has mime_type {stored.mime_type}; a document "
                             f"block takes {PDF} or {TEXT} (send an image file in an image block)")
        raise MediaError(f"{where}.source.type: Input should be 'base64', 'text', 'content', 'url' or 'file'; "
                         f"got {kind!r}")

    @staticmethod
    def _pdf(raw: bytes, where: str) -> Content:
        try:
            return pdf_content(raw)
        except MediaError as exc:
            raise MediaError(f"{where}.source: {exc.message}") from None

    def _content_source(self, source: dict[str, Any], where: str, images: list[tuple[str, ImageInfo]]) -> Content:
        """A custom-content document: a string, or text and image blocks (the images count as images)."""
        items = source.get("content")
        if isinstance(items, str):
            return text_content(items)
        if not isinstance(items, list):
            raise MediaError(f"{where}.source.content: Input should be a string or a list of blocks")
        texts: list[str] = []
        parts: list[ImageInfo] = []
        digests: list[str] = []
        for k, item in enumerate(items):
            at = f"{where}.source.content.{k}"
            if isinstance(item, dict) and item.get("type") == "text":
                texts.append(str(item.get("text", "")))
            elif isinstance(item, dict) and item.get("type") == "image":
                parsed = self._image(item, at)
                assert parsed.image is not None
                images.append((at, parsed.image))
                parts.append(parsed.image)
                digests.append(parsed.digest)
                self.images += 1
                texts.append(parsed.reading())
            else:
                raise MediaError(f"{at}: a content document holds text and image blocks only")
        text = "\n".join(texts)
        digest = hashlib.sha256("\0".join([text, *digests]).encode()).hexdigest()
        return Content("text", digest, text=text, parts=tuple(parts))
