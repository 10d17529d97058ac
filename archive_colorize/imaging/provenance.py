"""Every output says that its colour was made by a trained model, and by which.

In the EXIF `Software` tag, and in XMP with IPTC's Digital Source Type vocabulary
(`compositeWithTrainedAlgorithmicMedia`: a real photograph, here the scan's own L*,
combined with content a trained model made, the colour) and IPTC 2025.1's AI system
fields, plus the weights' sha256. The source's own XMP is kept: our description is added
beside it, and only a Digital Source Type it already had is replaced (its old value is
kept as archivecolorize:SourceDigitalSourceType).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from archive_colorize import __version__

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_OURS = "https://archive-colorize.github.io/ns/1.0/"
METHOD = "Iizuka, Simo-Serra, Ishikawa: Let there be Color! (SIGGRAPH 2016)"

_DST_ATTR = re.compile(r'\s[\w.-]+:DigitalSourceType\s*=\s*("([^"]*)"|\'([^\']*)\')')
_DST_ELEM = re.compile(r"<([\w.-]+:DigitalSourceType)(\s[^>]*)?>(.*?)</\1>", re.S)
_DST_EMPTY = re.compile(r"<[\w.-]+:DigitalSourceType\s[^>]*rdf:resource\s*=\s*[\"']([^\"']*)[\"'][^>]*/>")


@dataclass(frozen=True)
class Provenance:
    weights_sha256: str
    precision: str = "fp32"
    c2pa: object = None  # c2pa_sign.Credentials: also sign each file with C2PA content credentials

    @property
    def software(self) -> str:
        """EXIF Software: a machine colorization, by these weights (and, for the lossy
        engines, at this precision)."""
        extra = "" if self.precision == "fp32" else f", {self.precision}"
        return f"archive-colorize {__version__} (weights {self.weights_sha256[:12]}{extra})"

    def description(self, source_type: str | None = None) -> str:
        fields = {
            "Iptc4xmpExt:DigitalSourceType": DIGITAL_SOURCE_TYPE,
            "Iptc4xmpExt:AISystemUsed": "archive-colorize",
            "Iptc4xmpExt:AISystemVersionUsed": __version__,
            "archivecolorize:WeightsSHA256": self.weights_sha256,
            "archivecolorize:Precision": self.precision,
            "archivecolorize:Method": METHOD,
        }
        if source_type:
            fields["archivecolorize:SourceDigitalSourceType"] = source_type
        attrs = "".join(f"\n    {k}={quoteattr(v)}" for k, v in fields.items())
        return (
            f'<rdf:Description rdf:about=""\n    xmlns:Iptc4xmpExt="{NS_IPTC_EXT}"'
            f'\n    xmlns:archivecolorize="{NS_OURS}"{attrs}/>'
        )

    def xmp(self, source: bytes | None) -> bytes:
        """The XMP packet to write: the source's, with our description added."""
        text = source.decode("utf-8", "replace") if source else ""
        if "</rdf:RDF>" not in text:
            return _packet(self.description()).encode()
        found = None
        m = _DST_ATTR.search(text)
        if m:
            found, text = m.group(2) or m.group(3), text[: m.start()] + text[m.end() :]
        m = _DST_ELEM.search(text)
        if m:
            found, text = (
                re.sub(r"<[^>]+>", "", m.group(3)).strip() or found,
                text[: m.start()] + text[m.end() :],
            )
        m = _DST_EMPTY.search(text)
        if m:
            found, text = m.group(1), text[: m.start()] + text[m.end() :]
        at = text.rindex("</rdf:RDF>")
        return (text[:at] + self.description(found) + "\n" + text[at:]).encode()


def _packet(description: str) -> str:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f"  {description}\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
