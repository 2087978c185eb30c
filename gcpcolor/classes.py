"""The 1000 ImageNet-1k classes that condition BigGAN and the encoder.

Index order is the standard one (sorted wnids), as used by torchvision and the BigGAN
checkpoints. The table is read from the bundled `assets/imagenet_classes.tsv` on first use.
"""

from __future__ import annotations

import difflib
import functools
import re
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple

NUM_IMAGENET_CLASSES = 1000
_MAX_SUGGESTIONS = 5
_WNID_PATTERN = re.compile(r"n\d{8}")


class ImageNetClass(NamedTuple):
    index: int
    wnid: str
    name: str


class ClassNotFoundError(ValueError):
    """A class given by the user matches no ImageNet class, or more than one."""


if TYPE_CHECKING:
    IMAGENET_CLASSES: tuple[ImageNetClass, ...]


@functools.cache
def _load_classes() -> tuple[ImageNetClass, ...]:
    table = resources.files("gcpcolor").joinpath("assets/imagenet_classes.tsv")
    classes = []
    for line in table.read_text(encoding="utf-8").splitlines():
        index, wnid, name = line.split("\t")
        classes.append(ImageNetClass(int(index), wnid, name))
    if [c.index for c in classes] != list(range(NUM_IMAGENET_CLASSES)):
        raise RuntimeError(f"{table}: expected classes 0..{NUM_IMAGENET_CLASSES - 1} in order")
    return tuple(classes)


@functools.cache
def _index_by_wnid() -> dict[str, int]:
    return {c.wnid: c.index for c in _load_classes()}


def _spaced(name: str) -> str:
    # Users type "golden_retriever" or "go kart" for "go-kart".
    return " ".join(re.sub(r"[_\-]", " ", name).split())


def _normalise(name: str) -> str:
    return _spaced(name).lower()


@functools.cache
def _normalised_names() -> tuple[str, ...]:
    return tuple(_normalise(c.name) for c in _load_classes())


def __getattr__(name: str) -> object:
    # IMAGENET_CLASSES is built on first access so importing this module reads no file.
    if name == "IMAGENET_CLASSES":
        return _load_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _describe(indices: list[int]) -> str:
    classes = _load_classes()
    return ", ".join(f"{classes[i].name} ({i})" for i in indices)


def _check_index(index: int, spec: object) -> int:
    if not 0 <= index < NUM_IMAGENET_CLASSES:
        raise ClassNotFoundError(
            f"ImageNet class {spec!r} is out of range: indices go from 0 to "
            f"{NUM_IMAGENET_CLASSES - 1}"
        )
    return index


#: More digits than any class index can have; int() of a number with thousands of digits
#: raises a plain ValueError (Python's limit on integer string conversion), not our error.
_MAX_INDEX_DIGITS = 12


def parse_class_number(text: str) -> int | None:
    """The integer that `text` spells in ASCII digits (an optional sign and surrounding blanks
    allowed), or None when it is not such a number. A number too long to be any class index
    raises ClassNotFoundError."""
    text = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    if len(text.lstrip("+-").lstrip("0")) > _MAX_INDEX_DIGITS:
        shown = text if len(text) <= 20 else f"{text[:8]}...{text[-4:]} ({len(text)} characters)"
        raise ClassNotFoundError(f"class {shown!r} is out of range: not a class index")
    return int(text)


def resolve_class(spec: int | str) -> int:
    """The class index for an index, a numeric string, a wnid, or a (partial) class name.

    Names are compared case-insensitively (case only settles names that differ in nothing
    else) with underscores, hyphens and spaces equivalent; an exact name wins over partial
    matches, and a partial match must be unambiguous.
    """
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise ClassNotFoundError(f"ImageNet class must be an index or a name, got {spec!r}")
    if isinstance(spec, int):
        return _check_index(spec, spec)

    text = spec.strip()
    number = parse_class_number(text)
    if number is not None:
        return _check_index(number, spec)
    if _WNID_PATTERN.fullmatch(text.lower()):
        index = _index_by_wnid().get(text.lower())
        if index is None:
            raise ClassNotFoundError(f"{text!r} is not one of the 1000 ImageNet-1k wnids")
        return index

    query = _normalise(text)
    if not query:
        raise ClassNotFoundError("ImageNet class name is empty")
    names = _normalised_names()
    exact = [i for i, name in enumerate(names) if name == query]
    if len(exact) > 1:
        # Only case tells some names apart ("Cardigan" the corgi, "cardigan" the sweater).
        classes = _load_classes()
        same_case = [i for i in exact if _spaced(classes[i].name) == _spaced(text)]
        if len(same_case) != 1:
            raise ClassNotFoundError(
                f"ImageNet class {spec!r} is ambiguous: it matches {_describe(exact)}; "
                "type the name with its exact capitalisation or use the index"
            )
        exact = same_case
    if exact:
        return exact[0]
    partial = [i for i, name in enumerate(names) if query in name]
    if len(partial) == 1:
        return partial[0]
    if partial:
        shown = _describe(partial[:_MAX_SUGGESTIONS])
        hidden = len(partial) - _MAX_SUGGESTIONS
        more = f" and {hidden} more" if hidden > 0 else ""
        raise ClassNotFoundError(
            f"ImageNet class {spec!r} is ambiguous: it matches {shown}{more}; be more specific"
        )
    close = difflib.get_close_matches(query, names, n=_MAX_SUGGESTIONS, cutoff=0.6)
    suggestions = [i for match in close for i, name in enumerate(names) if name == match]
    hint = f"; did you mean {_describe(suggestions[:_MAX_SUGGESTIONS])}?" if close else ""
    raise ClassNotFoundError(f"unknown ImageNet class {spec!r}{hint}")


def class_name(index: int) -> str:
    return _load_classes()[_check_index(index, index)].name


def wnid_to_index(wnid: str) -> int:
    """The class index of an ImageNet-1k synset id such as 'n01440764'."""
    index = _index_by_wnid().get(wnid)
    if index is None:
        raise ClassNotFoundError(f"{wnid!r} is not one of the 1000 ImageNet-1k wnids")
    return index
