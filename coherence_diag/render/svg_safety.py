"""An allowlist check of generated SVG before it may be embedded in an HTML page.

`check_svg` parses the SVG as XML and raises `UnsafeSvgError` on anything outside what the chart
renderer (vl-convert's SVG output) emits: an element or attribute not on the lists, an event
handler attribute, a reference to anything but an id of the same chart (`url(#id)`, `href="#id"`),
`javascript:`, a DOCTYPE, entity, processing instruction, comment or CDATA section, or (with a
namespace) an id that does not carry the chart's prefix. It never repairs: hostile input is
rejected, not cleaned, so what is embedded is exactly what was checked.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"

# Elements vl-convert emits for our charts (marks, axes, legends, gradients, clip paths, titles),
# and the few plain SVG shapes it may use for other mark types.
ALLOWED_ELEMENTS = frozenset(
    {
        "svg", "g", "path", "rect", "line", "text", "tspan", "circle", "ellipse", "polygon", "polyline",
        "title", "desc", "defs", "clipPath", "linearGradient", "radialGradient", "stop",
    }
)
# Presentation and structure attributes (no event handlers, no style sheets, no links out).
ALLOWED_ATTRIBUTES = frozenset(
    {
        "id", "class", "role", "aria-label", "aria-roledescription", "aria-hidden", "aria-labelledby",
        "aria-describedby", "version", "width", "height", "viewBox", "transform", "d", "x", "y", "x1", "y1",
        "x2", "y2", "cx", "cy", "r", "rx", "ry", "dx", "dy", "points", "fill", "fill-opacity", "fill-rule",
        "stroke", "stroke-width", "stroke-opacity", "stroke-dasharray", "stroke-dashoffset", "stroke-linecap",
        "stroke-linejoin", "stroke-miterlimit", "opacity", "pointer-events", "display", "visibility",
        "clip-path", "clipPathUnits", "font-family", "font-size", "font-weight", "font-style", "font-variant",
        "text-anchor", "dominant-baseline", "alignment-baseline", "text-decoration", "letter-spacing",
        "offset", "stop-color", "stop-opacity", "gradientUnits", "gradientTransform", "spreadMethod",
        "fx", "fy", "fr", "preserveAspectRatio", "shape-rendering", "text-rendering", "href",
        f"{{{XLINK_NS}}}href",
    }
)
_LOCAL_URL = re.compile(r"url\(\s*#([A-Za-z0-9_.:-]+)\s*\)")
_ANY_URL = re.compile(r"url\s*\(", re.IGNORECASE)
_SCRIPT_SCHEME = re.compile(r"(java|vb)script\s*:", re.IGNORECASE)
# Attributes that are text for assistive technology, never interpreted as a URL or style: they may
# quote trace-derived names (escaped by the XML serializer) whatever those say.
_TEXT_ATTRIBUTES = frozenset({"aria-label", "aria-roledescription"})
MAX_SVG_CHARS = 2_000_000  # one chart; far above what the mark budget produces


class UnsafeSvgError(ValueError):
    """Generated SVG failed the allowlist check (it is not embedded)."""


def check_svg(svg: str, id_prefix: str | None = None) -> str:
    """Return `svg` unchanged if it passes the allowlist; raise UnsafeSvgError otherwise."""
    if len(svg) > MAX_SVG_CHARS:
        raise UnsafeSvgError(f"SVG of {len(svg):,} characters exceeds {MAX_SVG_CHARS:,}")
    head = svg.lstrip()
    if not head.startswith("<svg"):
        raise UnsafeSvgError("SVG must start with its <svg> element (no prolog, DOCTYPE or processing instruction)")
    for marker, what in (("<!", "DOCTYPE, ENTITY, comment or CDATA"), ("<?", "processing instruction")):
        if marker in svg:
            raise UnsafeSvgError(f"SVG contains a {what} ({marker!r})")
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as exc:
        raise UnsafeSvgError(f"SVG is not well-formed XML: {exc}") from None
    ids: set[str] = set()
    refs: set[str] = set()
    for element in root.iter():
        name = _local_name(element.tag)
        if name not in ALLOWED_ELEMENTS:
            raise UnsafeSvgError(f"element <{name}> is not allowed")
        for attr, value in element.attrib.items():
            _check_attribute(name, attr, value, refs)
            if attr == "id":
                if id_prefix is not None and not value.startswith(id_prefix):
                    raise UnsafeSvgError(f"id {value!r} lacks the chart prefix {id_prefix!r}")
                if value in ids:
                    raise UnsafeSvgError(f"id {value!r} is defined twice")
                ids.add(value)
    dangling = refs - ids
    if dangling:
        raise UnsafeSvgError(f"references to ids not defined in this SVG: {', '.join(sorted(dangling))}")
    return svg


def _local_name(tag: str) -> str:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        if ns != SVG_NS:
            raise UnsafeSvgError(f"element {name!r} of namespace {ns!r} is not allowed (SVG elements only)")
        return name
    raise UnsafeSvgError(f"element <{tag}> is outside the SVG namespace")


def _check_attribute(element: str, attr: str, value: str, refs: set[str]) -> None:
    plain = attr.rpartition("}")[2]
    if plain.lower().startswith("on"):
        raise UnsafeSvgError(f"event handler attribute {plain!r} on <{element}>")
    if attr not in ALLOWED_ATTRIBUTES:
        raise UnsafeSvgError(f"attribute {plain!r} on <{element}> is not allowed")
    if plain in _TEXT_ATTRIBUTES:
        return
    if _SCRIPT_SCHEME.search(value):
        raise UnsafeSvgError(f"attribute {plain!r} on <{element}> holds a script or data URL")
    if plain == "href":
        if not re.fullmatch(r"#[A-Za-z0-9_.:-]+", value):
            raise UnsafeSvgError(f"href {value!r} on <{element}> is not a reference to an id of this SVG")
        refs.add(value[1:])
        return
    urls = _ANY_URL.findall(value)
    if urls:
        local = _LOCAL_URL.findall(value)
        if len(local) != len(urls):
            raise UnsafeSvgError(f"attribute {plain!r} on <{element}> refers outside this SVG: {value!r}")
        refs.update(local)
