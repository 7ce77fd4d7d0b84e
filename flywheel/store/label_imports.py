"""Labels people made in another tool, as ingest candidates: a Label Studio JSON export of an
image classification project, and COCO image-level labels.

The whole file is parsed and checked before anything is read or written: a file that is not
such an export is an ``InvalidInputError`` and changes nothing. A task or image that cannot
give one label (cancelled, no choice, several, annotators who disagree, several categories)
becomes a rejection in the ingest's one report. The images are then read like a manifest's
(:func:`flywheel.store.ingest_sources.manifest_candidates`): a path relative to ``root`` (by
default the file's folder), or a URI under the ingest settings' rules. Every label arrives
as ``human``, with the annotator the file names.

Label Studio image paths: ``/data/local-files/?d=<path>`` is ``<root>/<path>``, any other
``/data/<path>`` (uploads) is ``<root>/<path>``: set ``root`` to the folder Label Studio serves
them from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flywheel.config import IngestSettings
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.store.ingest import Candidate
from flywheel.store.ingest_sources import uri_reader
from flywheel.store.remote_reads import RemoteReader

MAX_FILE_BYTES = 512 << 20  # an export larger than this is refused before it is parsed
LOCAL_FILES = "/data/local-files/"


def _load_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInputError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MB")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path} as JSON: {exc}") from exc


def _refused(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise InvalidInputError(reason)

    return read


# --- Label Studio ----------------------------------------------------------------------------
def _ls_annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"labelstudio:{who}" if who not in (None, "") else "labelstudio"


def _ls_choice(annotation: dict[str, Any]) -> str | list[str] | None:
    """The annotation's one choice; a list when it has several; None when it has none."""
    chosen: list[str] = []
    for result in annotation.get("result") or []:
        if isinstance(result, dict) and result.get("type") == "choices":
            chosen += [str(c) for c in (result.get("value") or {}).get("choices") or []]
    if len(chosen) > 1:
        return chosen
    return chosen[0] if chosen else None


def _ls_label(task: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(label, annotator, why not) of one task."""
    annotations = task.get("annotations", task.get("completions")) or []
    votes: dict[str, list[str]] = {}
    for ann in annotations:
        if not isinstance(ann, dict) or ann.get("was_cancelled"):
            continue
        choice = _ls_choice(ann)
        if isinstance(choice, list):
            return None, None, f"several choices ({', '.join(choice)}): not one class"
        if choice is not None:
            votes.setdefault(choice, []).append(_ls_annotator(ann))
    if not votes:
        return None, None, "no completed annotation with a choice"
    if len(votes) > 1:
        said = "; ".join(f"{c}: {', '.join(w)}" for c, w in sorted(votes.items()))
        return None, None, f"annotators disagree ({said})"
    (label, annotators) = next(iter(votes.items()))
    return label, ",".join(sorted(set(annotators))), None


def _ls_image(task: dict[str, Any]) -> str | None:
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("image"), str):
        return data["image"]
    strings = [v for v in data.values() if isinstance(v, str)]
    return strings[0] if len(strings) == 1 else None


def _ls_location(image: str, root: Path) -> str:
    """A Label Studio image reference as a path under ``root`` or the URI it is."""
    if image.startswith(LOCAL_FILES):
        found = parse_qs(urlsplit(image).query).get("d")
        if not found:
            raise InvalidInputError(f"{image!r} names no file (?d=...)")
        return str(root / found[0].lstrip("/"))
    if image.startswith("/data/"):
        return str(root / image.removeprefix("/data/"))
    return image


def labelstudio_candidates(
    path: Path,
    settings: IngestSettings,
    root: Path | None = None,
    reader: RemoteReader | None = None,
) -> list[Candidate]:
    """The tasks of a Label Studio JSON export (image classification) as candidates."""
    tasks = _load_json(path)
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise InvalidInputError(f"{path} is not a Label Studio JSON export (a list of tasks)")
    base = Path(root) if root is not None else Path(path).parent
    read = uri_reader(base, settings, reader)
    out = []
    for i, task in enumerate(tasks):
        image = _ls_image(task)
        name = f"task {task.get('id', i + 1)}: {image}"
        if image is None:
            out.append(Candidate(f"task {task.get('id', i + 1)}", _refused("no image in data")))
            continue
        label, annotator, why = _ls_label(task)
        try:
            location = _ls_location(image, base)
        except InvalidInputError as exc:
            why = why or str(exc)
            location = ""
        if why is not None:
            out.append(Candidate(name, _refused(why)))
        else:
            out.append(Candidate(name, read(location), label, annotator=annotator))
    return out


# --- COCO ------------------------------------------------------------------------------------
def _coco_tables(doc: Any, path: Path) -> tuple[list[dict], list[dict], dict[int, str]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InvalidInputError(f"{path} is not a COCO file (no 'images' list)")
    annotations = doc.get("annotations") or []
    categories = doc.get("categories") or []
    if not isinstance(annotations, list) or not isinstance(categories, list):
        raise InvalidInputError(f"{path}: 'annotations' and 'categories' must be lists")
    names: dict[int, str] = {}
    for cat in categories:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not cat.get("name"):
            raise InvalidInputError(f"{path}: a category needs an integer id and a name: {cat}")
        names[cat["id"]] = str(cat["name"])
    for img in doc["images"]:
        if not (isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str)):
            raise InvalidInputError(f"{path}: an image needs an id and a file_name: {img}")
    for ann in annotations:
        if not isinstance(ann, dict) or ann.get("category_id") not in names:
            raise InvalidInputError(f"{path}: an annotation names no known category: {ann}")
    return doc["images"], annotations, names


def coco_candidates(
    path: Path,
    settings: IngestSettings,
    images_root: Path | None = None,
    reader: RemoteReader | None = None,
) -> list[Candidate]:
    """COCO image-level labels: an image whose annotations all name one category gets that
    class; an image without annotations joins the pool unlabeled."""
    doc = _load_json(path)
    images, annotations, names = _coco_tables(doc, path)
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    default = f"coco:{info['contributor']}" if info.get("contributor") else "coco"
    per_image: dict[Any, dict[str, set[str]]] = {}
    for ann in annotations:
        who = ann.get("annotator") or (ann.get("attributes") or {}).get("annotator")
        by = per_image.setdefault(ann.get("image_id"), {})
        by.setdefault(names[ann["category_id"]], set()).add(f"coco:{who}" if who else default)
    base = Path(images_root) if images_root is not None else Path(path).parent
    read = uri_reader(base, settings, reader)
    out = []
    for img in images:
        name = f"image {img['id']}: {img['file_name']}"
        found = per_image.get(img["id"], {})
        if len(found) > 1:
            why = f"several categories ({', '.join(sorted(found))}): not an image-level label"
            out.append(Candidate(name, _refused(why)))
            continue
        label = next(iter(found), None)
        annotator = ",".join(sorted(found[label])) if label is not None else None
        out.append(Candidate(name, read(img["file_name"]), label, annotator=annotator))
    return out
