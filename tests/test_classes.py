"""The bundled ImageNet-1k class table and resolving user-given classes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gcpcolor import classes
from gcpcolor.classes import (
    NUM_IMAGENET_CLASSES,
    ClassNotFoundError,
    ImageNetClass,
    class_name,
    resolve_class,
    wnid_to_index,
)


def test_table_has_the_standard_order() -> None:
    table = classes.IMAGENET_CLASSES
    assert len(table) == NUM_IMAGENET_CLASSES == 1000
    assert [c.index for c in table] == list(range(1000))
    wnids = [c.wnid for c in table]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    assert table[0] == ImageNetClass(0, "n01440764", "tench")
    assert table[1] == ImageNetClass(1, "n01443537", "goldfish")
    assert table[207] == ImageNetClass(207, "n02099601", "golden retriever")
    assert table[999] == ImageNetClass(999, "n15075141", "toilet tissue")


def test_names_match_torchvision() -> None:
    meta = pytest.importorskip("torchvision.models._meta")
    assert [c.name for c in classes.IMAGENET_CLASSES] == list(meta._IMAGENET_CATEGORIES)


def test_names_told_apart_only_by_case() -> None:
    # torchvision's list has "Cardigan" (the corgi) and "cardigan" (the sweater).
    assert class_name(264) == "Cardigan" and class_name(474) == "cardigan"
    assert resolve_class("Cardigan") == 264
    assert resolve_class("cardigan") == 474
    with pytest.raises(ClassNotFoundError) as error:
        resolve_class("CARDIGAN")
    message = str(error.value)
    assert "ambiguous" in message and "(264)" in message and "(474)" in message


def test_wnids_match_the_shared_list(shared_data: Path) -> None:
    wnids = (shared_data / "imagenet_wnids.txt").read_text().split()
    assert [c.wnid for c in classes.IMAGENET_CLASSES] == wnids


def test_training_labels_agree_with_wnid_to_index(shared_data: Path) -> None:
    with open(shared_data / "train" / "labels.csv", newline="") as table:
        rows = [row for row in csv.DictReader(table) if int(row["imagenet_index"]) >= 0]
    assert len(rows) >= 1000
    for row in rows:
        assert wnid_to_index(row["imagenet_wnid"]) == int(row["imagenet_index"])


@pytest.mark.parametrize(
    ("spec", "index"),
    [
        (0, 0),
        (999, 999),
        ("207", 207),
        (" 1 ", 1),
        ("n01440764", 0),
        ("N02099601", 207),
        ("golden retriever", 207),
        ("Golden_Retriever", 207),
        ("GOLDEN  retriever", 207),
        ("go kart", 573),  # hyphens count as spaces too
        ("crane", 517),  # the exact name wins over "crane bird"
        ("crane bird", 134),
        ("golden retr", 207),  # unambiguous substring
        ("retriever golden", None),  # words must appear in order
    ],
)
def test_resolve_class(spec: int | str, index: int | None) -> None:
    if index is None:
        with pytest.raises(ClassNotFoundError):
            resolve_class(spec)
    else:
        assert resolve_class(spec) == index


@pytest.mark.parametrize("spec", [-1, 1000, "1000", "-3", True, 2.0, "", "9" * 5000, "-" + "1" * 5000, "²"])
def test_out_of_range_and_invalid_specs(spec: object) -> None:
    with pytest.raises(ClassNotFoundError) as error:
        resolve_class(spec)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)


def test_ambiguous_name_lists_candidates() -> None:
    with pytest.raises(ClassNotFoundError) as error:
        resolve_class("retriever")
    message = str(error.value)
    assert "\n" not in message and "ambiguous" in message
    assert "golden retriever (207)" in message and "Labrador retriever (208)" in message

    with pytest.raises(ClassNotFoundError) as error:
        resolve_class("cat")
    message = str(error.value)
    # At most five candidates are spelled out; the rest are counted.
    assert message.count(" (") == 5 and "more" in message


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ClassNotFoundError) as error:
        resolve_class("goldfisch")
    message = str(error.value)
    assert "\n" not in message and "unknown" in message and "goldfish (1)" in message
    with pytest.raises(ClassNotFoundError, match="unknown ImageNet class 'xyzzy'$"):
        resolve_class("xyzzy")


def test_class_not_found_is_a_value_error() -> None:
    assert issubclass(ClassNotFoundError, ValueError)


def test_class_name_and_wnid_lookup() -> None:
    assert class_name(207) == "golden retriever"
    assert class_name(resolve_class("toilet tissue")) == "toilet tissue"
    assert wnid_to_index("n15075141") == 999
    with pytest.raises(ClassNotFoundError):
        class_name(1000)
    with pytest.raises(ClassNotFoundError, match="n00000000"):
        wnid_to_index("n00000000")
    with pytest.raises(ClassNotFoundError):
        resolve_class("n00000000")


def test_every_name_and_wnid_resolves_to_itself() -> None:
    for entry in classes.IMAGENET_CLASSES:
        assert resolve_class(entry.name) == entry.index
        assert resolve_class(entry.wnid) == entry.index
