"""Every output says that its colour was made by a trained model, and by which.

In the EXIF `Software` tag, and in XMP with IPTC's Digital Source Type vocabulary
(`compositeWithTrainedAlgorithmicMedia`: a real photograph, here the scan's own L*,
combined with content a trained model made, the colour) and IPTC 2025.1's AI system
fields, plus the weights' sha256. The source's own XMP is kept: parsed safely and rebuilt
with our description beside it; only a Digital Source Type it already had is replaced (its
old value is kept as archivecolorize:SourceDigitalSourceType).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET  # building and writing only; parsing goes through defusedxml
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from archive_colorize import __version__

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_OURS = "https://archive-colorize.github.io/ns/1.0/"
METHOD = "Iizuka, Simo-Serra, Ishikawa: Let there be Color! (SIGGRAPH 2016)"


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

    def xmp(self, source: bytes | None, key: str = "") -> bytes:
        """The XMP packet to write: the source's, parsed (no DTD, no entities) and rebuilt
        without its comments and processing instructions, every Digital Source Type it
        had removed and ours added. A packet that does not parse is replaced by ours: a
        source must not be able to hide the label (a `<!-- </rdf:RDF> -->` once did).

        The output is a new document derived from the scan (XMP's media management): a new
        InstanceID and DocumentID, xmpMM:DerivedFrom naming the source's, its
        OriginalDocumentID carried on, and a History event by our software agent. The new
        ids are UUIDs made from `key` (the row), the source's ids and the model, so that a
        rerun writes the same bytes."""
        rdf = _source_rdf(source)
        if rdf is None:
            rdf = ET.fromstring(_packet(self.description()).split("\n", 1)[1].rsplit("\n", 1)[0]).find(
                f"{{{NS_RDF}}}RDF"
            )
            _derive(rdf, self, key)
            return _serialise(rdf)
        found = None
        for el in list(rdf.iter()):
            for name in [n for n in el.attrib if _local(n) == "DigitalSourceType"]:
                found = found or el.attrib[name]
                del el.attrib[name]
            for child in [c for c in el if _local(c.tag) == "DigitalSourceType"]:
                value = "".join(child.itertext()).strip() or child.attrib.get(f"{{{NS_RDF}}}resource", "")
                found = found or value or None
                el.remove(child)
        ours = ET.fromstring(_packet(self.description(found)).split("\n", 1)[1].rsplit("\n", 1)[0])
        rdf.extend(ours.find(f"{{{NS_RDF}}}RDF"))
        _derive(rdf, self, key)
        return _serialise(rdf)


def _serialise(rdf) -> bytes:
    meta = ET.Element(f"{{{NS_X}}}xmpmeta")
    meta.append(rdf)
    body = ET.tostring(meta, encoding="unicode")
    return (f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{body}\n<?xpacket end="w"?>').encode()


NS_MM = "http://ns.adobe.com/xap/1.0/mm/"
NS_STREF = "http://ns.adobe.com/xap/1.0/sType/ResourceRef#"
NS_STEVT = "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"
_IDS = uuid.UUID("6f1d5a0e-9b7c-4c1e-8a57-2c0b7d1e4f30")  # our namespace for uuid5 ids


def _take(rdf, name: str) -> str | None:
    """Remove every xmpMM:`name` (attribute or element) from the packet; -> the first value."""
    found = None
    for el in list(rdf.iter()):
        attr = f"{{{NS_MM}}}{name}"
        if attr in el.attrib:
            found = found or el.attrib.pop(attr)
        for child in [c for c in el if c.tag == attr]:
            found = (
                found
                or ("".join(child.itertext()).strip() or child.attrib.get(f"{{{NS_RDF}}}resource"))
                or None
            )
            el.remove(child)
    return found


def _derive(rdf, provenance: Provenance, key: str) -> None:
    """The source's media-management ids replaced by ours, with the derivation recorded."""
    iid, did, orig = _take(rdf, "InstanceID"), _take(rdf, "DocumentID"), _take(rdf, "OriginalDocumentID")
    _take(rdf, "DerivedFrom")
    seed = "|".join([key, iid or "", did or "", provenance.weights_sha256, provenance.precision])
    new_iid = f"xmp.iid:{uuid.uuid5(_IDS, 'instance|' + seed)}"
    new_did = f"xmp.did:{uuid.uuid5(_IDS, 'document|' + seed)}"
    desc = ET.SubElement(rdf, f"{{{NS_RDF}}}Description", {f"{{{NS_RDF}}}about": ""})
    ET.SubElement(desc, f"{{{NS_MM}}}InstanceID").text = new_iid
    ET.SubElement(desc, f"{{{NS_MM}}}DocumentID").text = new_did
    if orig or did:
        ET.SubElement(desc, f"{{{NS_MM}}}OriginalDocumentID").text = orig or did
    if iid or did:
        ref = ET.SubElement(desc, f"{{{NS_MM}}}DerivedFrom", {f"{{{NS_RDF}}}parseType": "Resource"})
        if iid:
            ET.SubElement(ref, f"{{{NS_STREF}}}instanceID").text = iid
        if did:
            ET.SubElement(ref, f"{{{NS_STREF}}}documentID").text = did
    # the source's History, if it had one, continues with our event
    history = next((h for h in rdf.iter(f"{{{NS_MM}}}History")), None)
    seq = history.find(f"{{{NS_RDF}}}Seq") if history is not None else None
    if seq is None:
        history = ET.SubElement(desc, f"{{{NS_MM}}}History")
        seq = ET.SubElement(history, f"{{{NS_RDF}}}Seq")
    event = ET.SubElement(seq, f"{{{NS_RDF}}}li", {f"{{{NS_RDF}}}parseType": "Resource"})
    ET.SubElement(event, f"{{{NS_STEVT}}}action").text = "derived"
    ET.SubElement(event, f"{{{NS_STEVT}}}parameters").text = f"colorized by a trained model ({METHOD})"
    ET.SubElement(event, f"{{{NS_STEVT}}}instanceID").text = new_iid
    ET.SubElement(event, f"{{{NS_STEVT}}}softwareAgent").text = provenance.software


NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_X = "adobe:ns:meta/"
for _prefix, _ns in (
    ("x", NS_X),
    ("rdf", NS_RDF),
    ("Iptc4xmpExt", NS_IPTC_EXT),
    ("archivecolorize", NS_OURS),
    ("dc", "http://purl.org/dc/elements/1.1/"),
    ("xmp", "http://ns.adobe.com/xap/1.0/"),
    ("xmpMM", "http://ns.adobe.com/xap/1.0/mm/"),
    ("stRef", "http://ns.adobe.com/xap/1.0/sType/ResourceRef#"),
    ("stEvt", "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"),
    ("photoshop", "http://ns.adobe.com/photoshop/1.0/"),
    ("exif", "http://ns.adobe.com/exif/1.0/"),
    ("tiff", "http://ns.adobe.com/tiff/1.0/"),
    ("Iptc4xmpCore", "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/"),
):
    ET.register_namespace(_prefix, _ns)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _source_rdf(source: bytes | None):
    """The source packet's rdf:RDF element, or None when there is none or it does not parse
    safely (defusedxml: a DTD or an entity is refused, never expanded)."""
    if not source:
        return None
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    text = source.decode("utf-8", "replace").lstrip("\ufeff")
    try:
        root = fromstring(text)  # comments and processing instructions are not kept
    except (ET.ParseError, DefusedXmlException, ValueError):
        return None
    if root.tag == f"{{{NS_RDF}}}RDF":
        return root
    return root.find(f".//{{{NS_RDF}}}RDF")


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
