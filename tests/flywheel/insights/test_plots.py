from pathlib import Path

from flywheel.insights.plots import confusion_matrix_png, cycles_png

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs(tmp_path: Path) -> None:
    cm = confusion_matrix_png([[3, 1], [0, 4]], ["a", "b"], tmp_path / "x" / "cm.png")
    rows = [
        {"test_accuracy": 0.9, "pseudo_precision": None, "pseudo_coverage": 0.0},
        {"test_accuracy": 0.95, "pseudo_precision": 0.99, "pseudo_coverage": 0.5},
    ]
    cycles = cycles_png(rows, tmp_path / "cycles.png")
    assert cm.read_bytes().startswith(PNG) and cycles.read_bytes().startswith(PNG)
