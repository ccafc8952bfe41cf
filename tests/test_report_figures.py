"""The report's figures draw what its prose reads: differences with the paper's beside them, an outlier that does not
squeeze the other rows, K on its real (log) scale."""
from __future__ import annotations

from matplotlib.figure import Figure

from cnx2lite.bootstrap import Estimate, RunSpread
from cnx2lite.reproduce import figures
from cnx2lite.reproduce.figures import differences_figure, plot_label_efficiency


def _estimate(value: float, low: float, high: float, runs: tuple[float, ...] = ()) -> Estimate:
    return Estimate(value, low, high, RunSpread(runs) if runs else None)


def test_a_row_far_off_the_others_is_an_arrow_at_the_edge_with_its_numbers():
    """GRN's mean aggregation (+20.1 [16.6, 26.2]) squeezed nine rows within [-3.5, 5.8] into a third of the axis
    (referee review F16)."""
    rows = {"a": (_estimate(-0.4, -1.4, 0.4), 0.9), "b": (_estimate(1.7, 0.1, 3.2), 0.8),
            "far": (_estimate(20.1, 16.6, 26.2, (17.0, 19.0, 22.0)), 0.9), "paper only": (None, 5.8)}
    fig = differences_figure(rows, "t", "points")
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert low < -1.4 and 5.8 < high < 16.6  # the axis spans the other rows and every paper number, not the outlier
    arrow = next(line for line in ax.get_lines() if line.get_marker() == ">")
    assert list(arrow.get_xdata()) == [high] and list(arrow.get_ydata()) == [2]
    texts = [t.get_text() for t in ax.texts]
    assert "20.1 [16.6, 26.2]: off the axis" in texts and "1.7 [0.1, 3.2]" in texts
    assert not [dots for dots in ax.collections if 20.0 < max(dots.get_offsets()[:, 0], default=0)]  # no run dots
    near = differences_figure({**rows, "far": (_estimate(8.0, 6.0, 10.0), 0.9)}, "t", "points").axes[0]
    assert near.get_xlim()[1] > 10.0 and not [line for line in near.get_lines() if line.get_marker() == ">"]


def test_only_a_row_that_would_squeeze_at_least_two_others_goes_off_the_axis():
    """Review of the change: one row, two narrow rows, or a lone measured row beside the paper's were drawn as arrows
    with no measured point left."""
    def arrows(rows):
        ax = differences_figure(rows, "t", "points").axes[0]
        return [line.get_marker() for line in ax.get_lines() if line.get_marker() in ("<", ">")]

    assert arrows({"one": (_estimate(20.0, 19.0, 21.0), None)}) == []
    assert arrows({"a": (_estimate(0.1, 0.05, 0.15), None), "b": (_estimate(1.0, 0.9, 1.1), None)}) == []
    assert arrows({"V1": (None, -0.1), "V2": (_estimate(4.3, 2.8, 5.9), 0.3)}) == []
    left = {"a": (_estimate(-0.4, -1.4, 0.4), 0.9), "b": (_estimate(1.7, 0.1, 3.2), 0.8),
            "far": (_estimate(-30.0, -34.0, -26.0), None)}
    assert arrows(left) == ["<"]


def test_label_efficiency_puts_k_on_a_log_axis_and_leaves_k_all_unjoined(tmp_path, monkeypatch):
    """K=10, 50 and all (about 852 per class) were equally spaced and joined by lines, and K=all's runs train other
    epochs than the rest (referee review F16)."""
    drawn = {}
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **_: drawn.setdefault("fig", fig))
    pair = (_estimate(40.0, 38.0, 42.0, (39.0, 41.0)), _estimate(35.0, 33.0, 37.0, (34.0, 36.0)))
    curves = {"fine-tuned": {"10": pair, "50": pair, "all": pair}, "kNN": {"10": pair, "50": pair, "all": pair}}
    plot_label_efficiency(curves, {"10": 10.0, "50": 50.0, "all": 852.3}, tmp_path / "x.png",
                          all_note="K=all: FCMAE 8 + 4 epochs, scratch 12")
    ax = drawn["fig"].axes[0]
    assert ax.get_xscale() == "log"
    assert [round(t, 1) for t in ax.get_xticks()] == [10.0, 50.0, 852.3]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "50", "all\n(852)"]
    joined = [line for line in ax.get_lines() if line.get_linestyle() != "None" and len(line.get_xdata()) > 1]
    assert len(joined) == 4 and all(max(line.get_xdata()) < 100 for line in joined)  # 10 to 50 only, per curve
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "white"]
    assert len(hollow) == 4 and all(min(line.get_xdata()) > 800 for line in hollow)  # K=all only, told from a K there
    assert len([t for t in ax.get_legend().get_texts()]) == 4  # one entry per curve, not per segment
    assert any("K=all" in t.get_text() for t in ax.texts)


def test_k_ticks_say_where_a_folder_holds_fewer_than_k_images_per_class():
    """A folder of 40 images per class trains K=50 and K=all on the same 40: one tick, not two labels over each
    other at one place, and never "50" where 40 were trained (review 46)."""
    assert figures._k_ticks({"10": 10.0, "50": 50.0, "all": 852.3}) == ([10.0, 50.0, 852.3], ["10", "50", "all\n(852)"])
    assert figures._k_ticks({"10": 10.0, "50": 40.0, "all": 40.0}) == ([10.0, 40.0], ["10", "50/all\n(40)"])
    assert figures._k_ticks({"10": 9.5, "all": 30.0}) == ([9.5, 30.0], ["10\n(9.5)", "all\n(30)"])


def test_the_knn_monitor_starts_at_zero_with_chance_drawn(monkeypatch):
    """A y range of 28-32% magnified 1-3 point wiggles of a flat curve (referee review F16)."""
    class Run:
        config = {"num_classes": None, "classes": [f"class {i}" for i in range(10)]}  # pretraining: no labels

        @staticmethod
        def series(_):
            return [1, 2, 3], [29.0, 31.5, 30.0]

    drawn = {}
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **_: drawn.setdefault("fig", fig))
    figures.plot_pretraining_knn({"run 0": Run()}, "unused.png")
    ax = drawn["fig"].axes[0]
    assert ax.get_ylim()[0] == 0 and any(list(line.get_ydata()) == [10.0, 10.0] for line in ax.get_lines())
