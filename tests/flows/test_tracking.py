"""What the registered MLflow model ships with is chosen on dev, never on test."""

from flows.tracking import shipped_criterion


def test_shipped_criterion_is_the_fastest_on_dev_not_on_test():
    points = {
        "entropy": {"threshold": 0.3, "dev": {"layer_speedup": 2.0, "quality": 80.0}, "test": {"layer_speedup": 3.0}},
        "patience": {"threshold": 2.0, "dev": {"layer_speedup": 2.5, "quality": 79.0}, "test": {"layer_speedup": 1.5}},
    }
    assert shipped_criterion(points) == {"criterion": "patience", "threshold": 2.0}
    assert shipped_criterion({}) == {}
