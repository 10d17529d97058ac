"""`archive-colorize report`: one self-contained HTML page for people who check results by
looking at them. Thumbnails are embedded as data URIs, charts are inline SVG, there is no
script: the file can be mailed, archived or opened offline.

Counts and charts cover every row; before/after pairs are bounded by `sample` (flagged rows
first, then an even spread over the rest), so the page's size does not grow with the run: the
embedded images are 360 px (what a click enlarges to), about 47 KB a pair on grainy historical
scans, so 200 pairs make a page of about 13 MB."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import string
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from archive_colorize.run import progress
from archive_colorize.errors import ColorizeError
from archive_colorize.core.defaults import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from archive_colorize.core.uripolicy import TRUSTED, UriPolicy, fetch_http, is_http
from archive_colorize.core.storage import abs_uri
from archive_colorize.core.storage import atomic_write_bytes, resolve

MAX_FAILED_LISTED = 1000


@dataclass
class ReportOptions:
    out: str
    html: str = "report.html"
    sample: int = 200
    low_confidence: float = 0.0  # scene-guess flags off: the shipped model's top-1 is 3-9 %
    near_grey: float = 3.0
    thumb: int = 360  # the embedded images' longest side: what the enlarged view shows
    storage_options: dict = field(default_factory=dict)


def _int(value) -> str:
    """A size from results.parquet, which another program may have written: a number or '?'."""
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "?"


def _esc(text) -> str:
    """Ids can hold anything (NUL, markup): show them, never interpret them."""
    s = "" if text is None else str(text)
    s = "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in s)
    return html.escape(s if len(s) <= 200 else s[:200] + "…")


def _load(o: ReportOptions):
    fs, root = resolve(o.out, o.storage_options)
    path = f"{root}/{progress.RESULTS}"
    if fs.exists(path):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
    else:
        log = progress.read_log(fs, root)
        if log is None:
            raise ColorizeError(
                f"no results in {o.out}: neither {progress.RESULTS} nor a progress log",
                hint="give the folder a run wrote to (its --out)",
            )
        table = progress.latest_rows(log)
    run = {}
    if fs.exists(f"{root}/run.json"):
        run = json.loads(fs.cat_file(f"{root}/run.json"))
    return table.to_pylist(), run


def _thumb(url: str, size: int, grey: bool, storage_options: dict, policy: UriPolicy = TRUSTED) -> str | None:
    try:
        if policy.untrusted and is_http(url):
            # the original, named by a remote document: fetched as the run did, every hop checked
            data = fetch_http(url, policy, policy.credentials_for(url, storage_options), DEFAULT_MAX_BYTES)
        else:
            policy.check(url)
            fs, path = resolve(url, storage_options)
            with fs.open(path, "rb") as f:
                data = f.read()
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > DEFAULT_MAX_PIXELS:  # a decompression bomb: no thumbnail
            return None
        im.draft("L" if grey else "RGB", (size, size))  # JPEG: decode at 1/2..1/8 scale, fast
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            # Pillow's own 16 -> 8 bit conversion clips (a white thumbnail): keep the top byte
            im = Image.fromarray((np.asarray(im).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
        im = im.convert("L") if grey else im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:
        return None


STRIP_FRAMES = 4  # a reel's card: this many frames, evenly spread, original above colour


def _strip(url: str, size: int, grey: bool, storage_options: dict, policy: UriPolicy = TRUSTED) -> str | None:
    """A reel as a strip of frames, for its card: the same frames from the original and the
    colour, so the pair compares like a scan's."""
    try:
        import av

        from archive_colorize.video.probe import probe

        policy.check(url)
        fs, path = resolve(url, storage_options)
        reel = probe(path, fs)
        want = [reel.pts[reel.frames * (2 * i + 1) // (2 * STRIP_FRAMES)] for i in range(STRIP_FRAMES)]
        shots = []
        with av.open(fs.open(path, "rb")) as c:
            v = c.streams.video[0]
            for pts in want:
                c.seek(pts, stream=v, backward=True)
                frame = next(f for f in c.decode(v) if f.pts is not None and f.pts >= pts)
                shots.append(frame.to_image())
        w, h = shots[0].size
        im = Image.new("RGB", (w * len(shots), h))
        for i, s in enumerate(shots):
            im.paste(s.convert("RGB"), (i * w, 0))
        im = im.convert("L") if grey else im
        im.thumbnail((size * 2, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:
        return None


def _figure(src: str | None, caption: str, name: str, side: str) -> str:
    shown = (
        f'<img src="{src}" alt="{_esc(f"{caption} of {name}")}" loading="eager">'
        if src
        else f'<div class="missing">{_esc(caption)} unavailable</div>'
    )
    # the compare view stacks the colour over the original: hovering, holding or focusing it
    # (tabindex) shows the original, which the hint says
    focus = ' tabindex="0"' if side == "after" else ""
    hint = (
        '<span class="hint"> (hold, hover or focus to see the original scan)</span>'
        if side == "after"
        else ""
    )
    return f'<figure class="{side}"{focus}>{shown}<figcaption>{_esc(caption)}{hint}</figcaption></figure>'


def _flags(r: dict, o: ReportOptions) -> list[str]:
    if r["status"] != "done":
        return []
    out = []
    probs = r.get("scene_top5_prob") or []
    if probs and probs[0] < o.low_confidence:
        out.append(f"low confidence ({probs[0]:.0%})")
    if r.get("mean_chroma") is not None and r["mean_chroma"] < o.near_grey:
        out.append(f"nearly grey (chroma {r['mean_chroma']:.1f})")
    return out


def _pick(done: list[dict], flagged: set, n: int) -> list[dict]:
    first = [r for r in done if r["id"] in flagged][:n]
    rest = [r for r in done if r["id"] not in flagged]
    k = n - len(first)
    if k <= 0 or not rest:
        return first
    if k >= len(rest):  # room for all (spreading k over fewer rows repeated the first one)
        return first + rest
    step = len(rest) / k
    return first + [rest[int(i * step)] for i in range(min(k, len(rest)))]


def _bar_chart(pairs: list[tuple[str, int]], title: str, horizontal: bool) -> str:
    if not pairs:
        return f"<figure><figcaption>{_esc(title)}</figcaption><p>no data</p></figure>"
    top = max(c for _, c in pairs) or 1
    if horizontal:
        row, w, label_w = 18, 360, 220
        h = row * len(pairs)
        bars = "".join(
            f'<text x="{label_w - 6}" y="{i * row + 13}" text-anchor="end">{_esc(k)}</text>'
            f'<rect x="{label_w}" y="{i * row + 3}" width="{max(1, c / top * w):.1f}" height="{row - 6}" fill="#4a7ab5"/>'
            f'<text x="{label_w + c / top * w + 4:.1f}" y="{i * row + 13}">{c}</text>'
            for i, (k, c) in enumerate(pairs)
        )
        svg_w = label_w + w + 60
    else:
        bw, h = 26, 160
        bars = "".join(
            f'<rect x="{i * bw + 2}" y="{h - c / top * (h - 20):.1f}" width="{bw - 4}" '
            f'height="{c / top * (h - 20):.1f}" fill="#b5774a">'
            f"<title>{_esc(k)}: {c}</title></rect>"
            f'<text x="{i * bw + bw / 2}" y="{h + 12}" text-anchor="middle" font-size="9">{_esc(k)}</text>'
            for i, (k, c) in enumerate(pairs)
        )
        svg_w, h = bw * len(pairs) + 4, h + 16
    return (
        f'<figure><figcaption>{_esc(title)}</figcaption><svg role="img" aria-label="{_esc(title)}" '
        f'viewBox="0 0 {svg_w} {h}" width="{svg_w}" height="{h}" '
        f'font-size="11" font-family="sans-serif">{bars}</svg></figure>'
    )


def _gain_note(r: dict) -> str:
    g = r.get("chroma_gain")
    return "" if g is None else f" · gain {g:.2f}"


def _gain_line(done: list[dict], record: dict | None) -> str:
    """What the predicted a*b* was scaled by, from the rows themselves (run.json says why)."""
    gains = Counter(round(r["chroma_gain"], 4) for r in done if r.get("chroma_gain") is not None)
    why = f" ({_esc(record['source'])})" if record and record.get("source") else ""
    if not gains:
        return "Chroma gain: not recorded (rows made before archive-colorize recorded it; gain 1)."
    if len(gains) == 1:
        return f"Chroma gain: {next(iter(gains)):g}{why}, on every done row."
    parts = ", ".join(f"{g:g} on {n} row{'s' if n != 1 else ''}" for g, n in sorted(gains.items()))
    return f"Chroma gain: {parts}; the run's gain{why}, rows with a chroma_gain column their own."


def _manifest_base_dir(url: str, storage_options: dict) -> str:
    """For runs whose run.json predates `manifest_base_dir`: the manifest's own rule (a
    directory manifest resolves against itself, a file against its folder)."""
    from archive_colorize.sources.manifest import open_manifest

    try:
        return open_manifest(url, storage_options).base_dir
    except Exception:  # the manifest moved or is gone: the file rule, as before
        return url.rsplit("/", 1)[0] if "/" in url else "."


# The page's frame and style; what fills it is made below. string.Template: the CSS's braces
# need no escaping, and a missing field is an error, not a blank.
TEMPLATE = string.Template((Path(__file__).parent / "templates" / "report.html").read_text(encoding="utf-8"))


def _manifest_link(o: ReportOptions, run: dict) -> str:
    """The run's IIIF manifest as the page links it: its published id when the run had
    --iiif-base; else, for a local OUT and page, the path from the page's own folder (a
    link relative to where `report` ran would break once the page is opened); else OUT's URL."""
    import os

    base = (run.get("options") or {}).get("iiif_base")
    if base:
        return f"{base.rstrip('/')}/iiif/manifest.json"
    manifest = f"{o.out.rstrip('/')}/iiif/manifest.json"
    if "://" in o.out or "://" in o.html:
        return manifest
    rel = os.path.relpath(os.path.abspath(manifest), os.path.dirname(os.path.abspath(o.html)))
    return rel.replace(os.sep, "/")


def write_report(o: ReportOptions) -> dict:
    if o.sample < 0:
        raise ColorizeError("--sample must be >= 0")
    rows, run = _load(o)
    rows.sort(key=lambda r: r["id"])
    base = run.get("manifest", "")
    base_dir = run.get("manifest_base_dir") or _manifest_base_dir(base, o.storage_options)
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] != "done"]
    flags = {r["id"]: _flags(r, o) for r in done}
    flagged = {k for k, v in flags.items() if v}
    shown = _pick(done, flagged, o.sample)

    # the run's URI policy (run.json): an untrusted manifest's originals are fetched under it
    untrusted = run.get("untrusted_origin")
    allow = tuple((run.get("options") or {}).get("allow_uri") or ())
    policy = UriPolicy(True, allow, untrusted) if untrusted else TRUSTED

    def thumbs(r):
        if r.get("kind") == "video":
            return (
                _strip(abs_uri(r["uri"], base_dir), o.thumb, True, o.storage_options, policy),
                _strip(r["output_uri"], o.thumb, False, o.storage_options),
            )
        return (
            _thumb(abs_uri(r["uri"], base_dir), o.thumb, True, o.storage_options, policy),
            _thumb(r["output_uri"], o.thumb, False, o.storage_options),
        )

    with ThreadPoolExecutor(4) as pool:
        images = list(pool.map(thumbs, shown))

    # reels have no scene guess
    classes = Counter(r["scene_top5"][0] for r in done if r.get("scene_top5")).most_common(20)
    chroma = [r["mean_chroma"] for r in done if r.get("mean_chroma") is not None]
    bins = []
    if chroma:
        hi = max(5.0, math.ceil(max(chroma) / 5) * 5)
        edges = [hi * i / 15 for i in range(16)]
        counts = [0] * 15
        for c in chroma:
            counts[min(14, int(c / hi * 15))] += 1
        bins = [(f"{edges[i]:.0f}", counts[i]) for i in range(15)]

    gain_line = _gain_line(done, run.get("chroma_gain"))
    cards = []
    for n, (r, (before, after)) in enumerate(zip(shown, images)):
        top = list(zip(r.get("scene_top5") or [], r.get("scene_top5_prob") or []))[:3]
        scene = "".join(f"<li>{_esc(c)} <b>{p:.0%}</b></li>" for c, p in top)
        fl = "".join(f'<span class="flag">{_esc(f)}</span>' for f in flags[r["id"]])
        name = r.get("title") or r["id"]
        extra = "".join(
            f'<p class="meta">{_esc(r[k])}</p>' for k in ("creator", "date", "rights") if r.get(k)
        )
        reel = r.get("kind") == "video"
        original = f"original reel, {STRIP_FRAMES} frames" if reel else "original scan"
        if reel:  # what a reel's row adds: its frames and shots, and how still its colour is
            warp = r.get("warp_error")
            extra += (
                f'<p class="meta">{_int(r.get("frames"))} frames · {_int(r.get("shots"))} shots · '
                f'{_esc(r.get("fps"))} fps · temporal {_esc(r.get("temporal"))}'
                + (f" · warp error {warp:.2f}" if warp is not None else "")
                + "</p>"
            )
        cards.append(
            f'<article class="card{" flagged" if fl else ""}" id="pair-{n}">'
            # the checkbox is the images' sibling, so that CSS alone can restack them
            f'<a class="tool" href="#pairs">Close</a><input type="checkbox" class="tool cmp" id="cmp-{n}">'
            f'<label class="tool" for="cmp-{n}">compare in place</label>'
            f'<a class="open" href="#pair-{n}" aria-label="{_esc(f"Enlarge {name}: {original} and colorized")}">'
            f'<div class="pair{" reel" if reel else ""}">{_figure(before, original, name, "before")}'
            f'{_figure(after, "colorized", name, "after")}</div></a><h3>{_esc(name)}</h3>'
            + (f'<p class="id">{_esc(r["id"])}</p>' if r.get("title") else "")
            + f"{extra}{fl}<ol>{scene}</ol>"
            f'<p class="meta">{_int(r.get("width"))}×{_int(r.get("height"))} · chroma {r.get("mean_chroma") or 0:.1f}'
            f"{_gain_note(r)}</p></article>"
        )
    fail_rows = "".join(
        f"<tr><td>{_esc(r['id'])}</td><td>{_esc(r['uri'])}</td><td>{_esc(r['error'])}</td></tr>"
        for r in failed[:MAX_FAILED_LISTED]
    )
    more = (
        f"<p>… and {len(failed) - MAX_FAILED_LISTED} more in results.parquet</p>"
        if len(failed) > MAX_FAILED_LISTED
        else ""
    )
    weights = run.get("weights", {})
    fields = {
        "out": _esc(o.out),
        "manifest": _esc(base),
        "weights": _esc((weights.get("sha256") or "")[:12]),
        "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gain_line": gain_line,
        "size": int(o.thumb),
        "iiif": _esc(_manifest_link(o, run)),
        "rows": len(rows),
        "done": len(done),
        "failed": len(failed),
        "flagged": len(flagged),
        "shown": len(shown),
        "charts": _bar_chart(classes, "Top scene class (done rows)", True)
        + _bar_chart(bins, "Mean a*b* chroma (colourfulness)", False),
        "flag_line": _esc(
            f"Flagged: mean a*b* chroma below {o.near_grey:g} (nearly grey)"
            + (
                f", or the model's top scene guess below {o.low_confidence:.0%} (about the scene class, not the colour)."
                if o.low_confidence > 0
                else ". Scene-guess flags are off (--low-confidence P turns them on)."
            )
        ),
        "cards": "".join(cards) or "<p>No done rows.</p>",
        "failed_table": (
            "<table><tr><th>id</th><th>uri</th><th>reason</th></tr>" + fail_rows + "</table>" + more
            if failed
            else "<p>None.</p>"
        ),
    }
    page = TEMPLATE.substitute(fields)  # every value above is escaped or ours
    atomic_write_bytes(o.html, page.encode("utf-8"))
    return {
        "total": len(rows),
        "done": len(done),
        "failed": len(failed),
        "flagged": len(flagged),
        "shown": len(shown),
    }
