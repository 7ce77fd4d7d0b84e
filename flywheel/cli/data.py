"""``flywheel ingest ...`` and ``flywheel data ...``: importing images, dataset versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.cli.common import (
    LabelsOpt,
    SeedOpt,
    TestOpt,
    console,
    progress_bar,
    shown,
    workspace,
)
from flywheel.datasets.versions import VersionDiff, VersionInfo
from flywheel.db.models import LabelSource
from flywheel.store import quarantine
from flywheel.store.ingest import Candidate, IngestReport, SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import (
    digits_candidates,
    imagefolder_candidates,
    manifest_candidates,
)

ingest_app = typer.Typer(no_args_is_help=True, help="Import images into the store.")
data_app = typer.Typer(
    no_args_is_help=True, help="Dataset versions: list, show, diff, export; quarantine."
)


def print_report(
    report: IngestReport, max_rejections: int = 20, label_source: str = LabelSource.SEED.value
) -> None:
    splits = ", ".join(f"{k} {v}" for k, v in sorted(report.by_split.items())) or "none"
    console.print(
        f"[green]added {report.added}[/] samples ({splits}); "
        f"{report.labels_added} {label_source} labels; "
        f"{len(report.duplicates)} duplicates skipped; "
        f"[{'red' if report.rejected else 'green'}]{len(report.rejected)} rejected[/]"
    )
    if report.rejected:
        table = Table("file", "reason", title="rejected")
        for r in report.rejected[:max_rejections]:
            table.add_row(shown(r.name), shown(r.reason))
        console.print(table)
        if len(report.rejected) > max_rejections:
            console.print(f"... and {len(report.rejected) - max_rejections} more")


def run_ingest(
    ctx: typer.Context,
    candidates: list[Candidate],
    source: str,
    plan: SplitPlan,
    label_source: str = LabelSource.SEED.value,
):
    with workspace(ctx) as ws, progress_bar(f"ingest {source}") as update:
        report = ingest_candidates(
            ws.db, ws.blobs, candidates, source, ws.settings.ingest, plan, update, label_source
        )
    print_report(report, label_source=label_source)
    return report


@ingest_app.command("imagefolder")
def ingest_imagefolder(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="root/<class>/*.png; loose images = unlabeled")],
    labels_per_class: LabelsOpt = None,
    test_fraction: TestOpt = 0.0,
    seed: SeedOpt = 0,
) -> None:
    """Import an ImageFolder tree (torchvision layout)."""
    plan = SplitPlan(labels_per_class, test_fraction, seed)
    run_ingest(ctx, imagefolder_candidates(root), f"imagefolder:{root.resolve().name}", plan)


@ingest_app.command("manifest")
def ingest_manifest(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Parquet or CSV with uri[, label][, split]")],
    labels_per_class: LabelsOpt = None,
    test_fraction: TestOpt = 0.0,
    seed: SeedOpt = 0,
) -> None:
    """Import the images a manifest lists (paths relative to it, or URIs)."""
    plan = SplitPlan(labels_per_class, test_fraction, seed)
    candidates = manifest_candidates(path, ctx.obj.ingest)
    run_ingest(ctx, candidates, f"manifest:{path.name}", plan)


@ingest_app.command("labelstudio")
def ingest_labelstudio(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A Label Studio JSON export (image classification)")],
    root: Annotated[
        Path | None,
        typer.Option(help="Where /data/... image paths live (default: the file's folder)"),
    ] = None,
    labels_per_class: LabelsOpt = None,
    test_fraction: TestOpt = 0.0,
    seed: SeedOpt = 0,
) -> None:
    """Import a Label Studio export's labels as human labels, with their annotators.

    Images already in the project get the label; tasks without one clear choice are
    reported, and a file that is not such an export changes nothing."""
    from flywheel.store.label_imports import labelstudio_candidates

    plan = SplitPlan(labels_per_class, test_fraction, seed)
    candidates = labelstudio_candidates(path, ctx.obj.ingest, root)
    run_ingest(ctx, candidates, f"labelstudio:{path.name}", plan, LabelSource.HUMAN.value)


@ingest_app.command("coco")
def ingest_coco(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A COCO JSON file: images, annotations, categories")],
    images: Annotated[
        Path | None, typer.Option(help="Folder of file_name paths (default: the file's folder)")
    ] = None,
    labels_per_class: LabelsOpt = None,
    test_fraction: TestOpt = 0.0,
    seed: SeedOpt = 0,
) -> None:
    """Import COCO image-level labels as human labels, with their annotators.

    An image's annotations must all name one category; images without any join the pool."""
    from flywheel.store.label_imports import coco_candidates

    plan = SplitPlan(labels_per_class, test_fraction, seed)
    candidates = coco_candidates(path, ctx.obj.ingest, images)
    run_ingest(ctx, candidates, f"coco:{path.name}", plan, LabelSource.HUMAN.value)


@ingest_app.command("digits")
def ingest_digits(
    ctx: typer.Context,
    labels_per_class: LabelsOpt = 5,
    test_fraction: TestOpt = 0.3,
    seed: SeedOpt = 0,
) -> None:
    """Import sklearn's 1,797 real 8x8 digit scans (the built-in demo data set)."""
    plan = SplitPlan(labels_per_class, test_fraction, seed)
    run_ingest(ctx, digits_candidates(), "digits", plan)


# --- data --------------------------------------------------------------------------------


def print_version(info: VersionInfo) -> None:
    console.print(f"[bold]version[/] {info.id}")
    console.print(f"  parent   {info.parent_id or '-'}")
    console.print(f"  created  {info.created_at:%Y-%m-%d %H:%M:%S}")
    if info.message:
        console.print(f"  message  {info.message}")
    s = info.stats
    console.print(
        f"  rows     {s['num_rows']}  " + "  ".join(f"{k}={v}" for k, v in s["by_split"].items())
    )
    per_class = s["by_class_split_source"]
    columns = sorted({col for counts in per_class.values() for col in counts})
    table = Table("class", *columns, "total", title="labels by class, split/source")
    totals = dict.fromkeys(columns, 0)
    for label, counts in per_class.items():
        for col in columns:
            totals[col] += counts.get(col, 0)
        table.add_row(label, *(str(counts.get(c, 0)) for c in columns), str(sum(counts.values())))
    table.add_row("[bold]all", *(f"[bold]{totals[c]}" for c in columns), f"[bold]{s['num_rows']}")
    console.print(table)


@data_app.command("snapshot")
def data_snapshot(
    ctx: typer.Context,
    message: Annotated[str | None, typer.Option("--message", "-m")] = None,
) -> None:
    """Freeze the current labels into a new immutable version."""
    with workspace(ctx) as ws:
        info, created = ws.versions.snapshot(message)
    console.print("[green]new version[/]" if created else "[yellow]labels unchanged[/]; version")
    print_version(info)


@data_app.command("versions")
def data_versions(ctx: typer.Context) -> None:
    """List dataset versions, oldest first."""
    with workspace(ctx) as ws:
        versions = ws.versions.list()
    table = Table("id", "parent", "created", "rows", "by source", "message")
    for v in versions:
        by_source = ", ".join(f"{k} {n}" for k, n in v.stats["by_source"].items())
        table.add_row(
            v.id[:12],
            (v.parent_id or "-")[:12],
            f"{v.created_at:%Y-%m-%d %H:%M}",
            str(v.num_rows),
            by_source,
            v.message or "",
        )
    console.print(table if versions else "no dataset versions yet")


@data_app.command("show")
def data_show(ctx: typer.Context, version: Annotated[str, typer.Argument()] = "latest") -> None:
    """Summary of one version (id, id prefix or `latest`); verifies its checksum."""
    with workspace(ctx) as ws:
        info, _ = ws.versions.read(version)
    print_version(info)


def print_diff(diff: VersionDiff) -> None:
    console.print(
        f"{diff.a[:12]} -> {diff.b[:12]}: +{diff.added.num_rows} added, "
        f"-{diff.removed.num_rows} removed, {diff.relabeled.num_rows} relabeled, "
        f"{diff.reattributed.num_rows} re-attributed"
    )
    rows = diff.summary()
    if rows:
        table = Table("change", "class", "source", "count")
        for r in rows:
            table.add_row(r["change"], r["label"], r["source"], str(r["count"]))
        console.print(table)


@data_app.command("diff")
def data_diff(ctx: typer.Context, a: str, b: str) -> None:
    """What changed from version A to version B, per class and source."""
    with workspace(ctx) as ws:
        diff = ws.versions.diff(a, b)
    print_diff(diff)


@data_app.command("export")
def data_export(
    ctx: typer.Context,
    version: str,
    output: Annotated[Path, typer.Option("--output", "-o")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="parquet, csv, imagefolder or hf")
    ] = "parquet",
) -> None:
    """Write a version as a Parquet or CSV manifest, a torchvision ImageFolder tree, or
    Hugging Face Parquet with the images embedded (load_dataset("parquet", data_dir=...))."""
    from flywheel.datasets.exports import export_version

    with workspace(ctx) as ws:
        report = export_version(ws.versions, ws.blobs, version, output, fmt)
    splits = ", ".join(f"{n} {split}" for split, n in sorted(report.by_split.items()))
    console.print(
        f"[green]wrote[/] {report.path} ({report.rows} rows{': ' + splits if splits else ''})"
    )


@data_app.command("quarantine")
def data_quarantine(
    ctx: typer.Context,
    release: Annotated[
        str | None, typer.Option("--release", help="Put this sample id back for the next cycle")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
) -> None:
    """Samples cycles skip (missing blob, checksum mismatch, undecodable), newest first."""
    with workspace(ctx) as ws:
        if release is not None:
            gone = quarantine.release(ws.db, release)
            console.print(f"[green]released[/] {gone.sample_id}: the next cycle tries it again")
            return
        items, total = quarantine.list_quarantine(ws.db, limit)
    if not items:
        console.print("no samples in quarantine")
        return
    table = Table("sample", "reason", "cycle", "since", title=f"quarantine ({total})")
    for q in items:
        cycle = str(q.cycle_id) if q.cycle_id is not None else "-"
        table.add_row(q.sample_id, shown(q.reason), cycle, f"{q.created_at:%Y-%m-%d %H:%M:%S}")
    console.print(table)
    if total > len(items):
        console.print(f"... and {total - len(items)} more (--limit)")
