"""Zip packages (Office Open XML, OpenDocument, EPUB): their members read, and the
package written again member by member, in the same order, each with its own name,
date, compression and attributes, and byte for byte as it was unless it is a part
whose text was translated (every library's own `save` re-serializes every part).
"""

from __future__ import annotations

import io
import zipfile

from nmt.text.formats import DocumentError
from nmt.text.formats.xmlunits import Rules, parse, serialize, units_of, write
from nmt.text.placement import translate_units

MAX_UNZIPPED = 1 << 30  # bytes a package may unpack to: a zip bomb stops here


def open_zip(data: bytes, name: str, kind: str) -> zipfile.ZipFile:
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
        broken = package.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DocumentError(f"{name}: not a readable {kind} (a broken zip: {err})") from None
    if broken:
        raise DocumentError(f"{name}: not a readable {kind} (its member {broken} is corrupt)")
    if sum(info.file_size for info in package.infolist()) > MAX_UNZIPPED:
        raise DocumentError(f"{name}: unpacks to over {MAX_UNZIPPED >> 20} MiB; not read")
    return package


def rewrite(package: zipfile.ZipFile, changed: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in package.infolist():
            data = changed[info.filename] if info.filename in changed else package.read(info)
            target.writestr(info, data)
    return out.getvalue()


def translate_parts(
    translator, package: zipfile.ZipFile, parts: dict[str, Rules], name: str, **options
) -> dict[str, bytes]:
    """The new bytes of each named XML member, its units found by its rules; all units
    of all parts translated in one batch."""
    read = {}
    for member, rules in parts.items():
        original = package.read(member)
        root = parse(original, f"{name}: {member}")
        read[member] = (original, root, units_of([root], rules))
    units = [unit for _, _, found in read.values() for unit in found]
    texts = translate_units(translator, [items for items, _ in units], **options)
    for (_, slots), new in zip(units, texts, strict=True):
        if new is not None:
            write(slots, new)
    return {member: serialize(root, original) for member, (original, root, _) in read.items()}
