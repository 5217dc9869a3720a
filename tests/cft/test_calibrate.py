"""fit_calibrated_head: the selection rule, skip rule, seeding, resume, and both optimisers."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cft.calibrate import fit_calibrated_head
from labelwise.plugins.cft.engine import CategoryRows, category_seed
from labelwise.plugins.cft.genetic import next_generation
from labelwise.plugins.cft.gradient import asymmetric_loss
from labelwise.plugins.cft.options import CFTOptions
from labelwise.plugins.cft.synthetic import make_synthetic_problem

QUICK = dict(epochs=40, early_stopping=15, population=12)


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem(n_train=300, n_val=200, n_test=10, dim=12, num_classes=4, head_steps=30,
                                  prevalence=(0.15, 0.4), seed=1)


def _fit(p, **kw):
    options = CFTOptions(**{**QUICK, **kw.pop("options", {})})
    return fit_calibrated_head(p["train_features"], p["train_labels"], p["val_features"], p["val_labels"],
                               p["weight"], p["bias"], options=options, progress=False, **kw)


def _val_ap(p, weight, bias, c):
    known = p["val_labels"][:, c] >= 0
    scores = p["val_features"][known] @ np.asarray(weight)[c] + np.asarray(bias)[c]
    return average_precision_score(p["val_labels"][known, c], scores)


@pytest.mark.parametrize("optimizer", ["ga", "bp", "best"])
def test_validation_score_never_decreases(problem, optimizer):
    result = _fit(problem, options=dict(optimizer=optimizer, lr=1e-2))
    assert len(result.categories) == 4
    improved = 0
    for c, report in enumerate(result.categories):
        assert report["skipped"] is None
        assert report["score_before"] == pytest.approx(_val_ap(problem, problem["weight"], problem["bias"], c), abs=1e-6)
        assert report["score_after"] >= report["score_before"]
        assert report["score_after"] == pytest.approx(_val_ap(problem, result.weight, result.bias, c), abs=1e-6)
        improved += report["score_after"] > report["score_before"]
        if not report["changed"]:
            assert torch.equal(result.weight[c], torch.from_numpy(problem["weight"][c]))
    assert improved >= 2  # the optimisers do find strict improvements on this problem
    if optimizer == "best":
        for report in result.categories:
            best = max(report["ga"]["score"], report["bp"]["score"], report["score_before"])
            assert report["score_after"] == best


def test_ga_updates_the_bias(problem):
    result = _fit(problem)
    changed = result.changed
    assert changed
    assert all(float(result.bias[c]) != float(problem["bias"][c]) for c in changed)


def test_skip_rule_keeps_the_row(problem):
    p = dict(problem)
    p["train_labels"] = problem["train_labels"].copy()
    p["val_labels"] = problem["val_labels"].copy()
    p["train_labels"][:, 1] = np.where(p["train_labels"][:, 1] == 1, -1, p["train_labels"][:, 1])  # no positive
    p["val_labels"][:, 2] = np.where(p["val_labels"][:, 2] == 0, -1, p["val_labels"][:, 2])  # no negative
    result = _fit(p)
    by = {r["index"]: r for r in result.categories}
    assert by[1]["skipped"] == "no known positive in the training labels"
    assert by[2]["skipped"] == "no known negative in the validation labels"
    for c in (1, 2):
        assert by[c]["chosen"] == "original" and by[c]["score_after"] is None
        assert torch.equal(result.weight[c], torch.from_numpy(problem["weight"][c]))
        assert float(result.bias[c]) == float(problem["bias"][c])
    assert result.summary()["skipped"] == 2


def test_early_stopping_and_epochs_semantics(problem):
    result = _fit(problem, options=dict(epochs=7, early_stopping=None))
    assert all(r["ga"]["epochs_run"] == 7 for r in result.categories)
    # a perfectly separated validation set cannot improve: stops after `early_stopping` epochs
    p = dict(problem)
    val = problem["val_labels"].copy()
    scores = problem["val_features"] @ problem["weight"][0] + problem["bias"][0]
    val[:, 0] = np.where(val[:, 0] >= 0, (scores > np.median(scores)).astype(np.int8), -1)
    p["val_labels"] = val
    report = _fit(p, options=dict(epochs=100, early_stopping=5), categories=[0]).categories[0]
    assert report["score_before"] == 1.0
    assert report["ga"]["best_at"] == -1 and report["ga"]["epochs_run"] == 5
    assert report["chosen"] == "original" and not report["changed"]


def test_seeded_deterministic_and_independent_of_category_order(problem):
    a = _fit(problem)
    b = _fit(problem)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    other = _fit(problem, options=dict(seed=5))
    assert not torch.equal(a.weight, other.weight)
    # each category alone gives what it gives among the others (any order, any split of work)
    singles = [_fit(problem, categories=[c]) for c in range(4)]
    for c in range(4):
        assert torch.equal(singles[c].weight[c], a.weight[c]) and singles[c].bias[c] == a.bias[c]
    assert [r["seed"] for r in a.categories] == [category_seed(0, c) for c in range(4)]


def test_ga_elite_training_fitness_never_decreases(problem, monkeypatch):
    """End to end through fit_calibrated_head: with elitism the fittest individual survives
    unchanged, so each category's best training fitness (recomputed here with scikit-learn from
    the population's logits) never decreases from one generation to the next."""
    logits = {}  # id of a category's training rows -> [population logits (P, N_c) per generation]
    fitness = CategoryRows.fitness

    def recording(self, population, metric, idle=None):  # a generation's fitness (validation scores one row)
        logits.setdefault(id(self), (self, []))[1].append(self.scores(population).detach().cpu().numpy().copy())
        return fitness(self, population, metric, idle)

    monkeypatch.setattr(CategoryRows, "fitness", recording)
    result = _fit(problem, options=dict(epochs=60, early_stopping=None, mutation_range=1e-2))
    assert len(logits) == 4 and all(r["ga"]["epochs_run"] == 60 for r in result.categories)
    improved = 0
    for rows, generations in logits.values():
        assert len(generations) == 60
        best = [max(average_precision_score(rows.positive, s) for s in g) for g in generations]
        assert all(b >= a for a, b in zip(best, best[1:])), best
        improved += best[-1] > best[0]
    assert improved >= 2  # and the elite does get fitter


def test_ga_equals_a_plain_loop_with_sklearn_fitness(problem):
    """The batched engine against a per-individual loop of sklearn calls (the reference style)."""
    options = CFTOptions(**QUICK)
    c = 3
    result = _fit(problem, categories=[c])
    x = torch.from_numpy(problem["train_features"])
    known = problem["train_labels"][:, c] >= 0
    y = problem["train_labels"][known, c]
    rows = CategoryRows(x, torch.from_numpy(np.flatnonzero(known)), y == 1, cache=True, chunk_rows=10)
    row = torch.cat([torch.from_numpy(problem["weight"][c]), torch.from_numpy(problem["bias"][c:c + 1])])
    best, best_score, best_at = row.clone(), _val_ap(problem, problem["weight"], problem["bias"], c), -1
    population = row.repeat(options.population, 1)
    generator = torch.Generator().manual_seed(category_seed(0, c))
    for epoch in range(options.epochs):
        scores = rows.scores(population).numpy()
        fitness = torch.tensor([average_precision_score(y, s) for s in scores], dtype=torch.float64)
        candidate = population[int(torch.argmax(fitness))]
        w, b = candidate[:-1].numpy()[None], candidate[-1:].numpy()
        v = _val_ap(problem, np.repeat(w, 4, 0), np.repeat(b, 4), c)
        if v > best_score:
            best, best_score, best_at = candidate.clone(), v, epoch
        if epoch - best_at >= options.early_stopping:
            break
        population = next_generation(population, fitness, crossover_rate=0.2, mutation_prob=0.5, mutation_range=1e-3,
                                     elitism=1, generator=generator)
    report = result.categories[0]
    assert report["ga"]["epochs_run"] == epoch + 1 and report["ga"]["best_at"] == best_at
    assert torch.equal(result.weight[c], best[:-1]) and float(result.bias[c]) == float(best[-1])


def test_bp_equals_adam_on_the_asymmetric_loss(problem):
    c = 0
    result = _fit(problem, categories=[c], options=dict(optimizer="bp", lr=1e-3))
    known = problem["train_labels"][:, c] >= 0
    x = torch.from_numpy(problem["train_features"][known])
    y = torch.from_numpy((problem["train_labels"][known, c] == 1).astype(np.float32))
    w = torch.nn.Parameter(torch.from_numpy(problem["weight"][c:c + 1].copy()))
    b = torch.nn.Parameter(torch.from_numpy(problem["bias"][c:c + 1].copy()))
    adam = torch.optim.Adam([w, b], lr=1e-3)
    best, best_score, best_at = None, _val_ap(problem, problem["weight"], problem["bias"], c), -1
    for epoch in range(QUICK["epochs"]):
        adam.zero_grad()
        asymmetric_loss((x @ w.T + b)[:, 0], y).backward()
        adam.step()
        v = _val_ap(problem, w.detach().numpy().repeat(4, 0), b.detach().numpy().repeat(4), c)
        if v > best_score:
            best, best_score, best_at = (w.detach().clone(), b.detach().clone()), v, epoch
        if epoch - best_at >= QUICK["early_stopping"]:
            break
    report = result.categories[0]
    assert report["bp"]["best_at"] == best_at and best_at >= 0
    torch.testing.assert_close(result.weight[c], best[0][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(result.bias[c], best[1][0], rtol=0, atol=1e-6)


def test_auroc_metric(problem):
    result = _fit(problem, options=dict(metric="auroc", optimizer="best"))
    assert result.summary()["metric"] == "auroc"
    assert all(r["score_after"] >= r["score_before"] for r in result.categories)


def test_resume_uses_saved_categories(problem, tmp_path):
    state = tmp_path / "state"
    first = _fit(problem, state_dir=state)
    files = sorted(state.glob("category*-ga.json"))
    assert len(files) == 4
    saved = json.loads(files[1].read_text())
    # a marker no run can produce (AP <= 1): a resumed run must take the saved result as is,
    # and it beats the original row, so it is chosen
    marker = {"row": [0.5] * len(saved["row"]), "score": 2.0, "epochs_run": 12345, "best_at": 678}
    files[1].write_text(json.dumps(marker))
    files[2].unlink()  # "interrupted" before category 2 finished: it is run again
    resumed = _fit(problem, state_dir=state)
    assert torch.equal(resumed.weight[2], first.weight[2]) and torch.equal(resumed.weight[0], first.weight[0])
    assert resumed.categories[2] == first.categories[2]
    report = resumed.categories[1]
    assert report["ga"] == {"score": 2.0, "epochs_run": 12345, "best_at": 678}
    assert report["chosen"] == "ga" and report["score_after"] == 2.0 and report["changed"]
    assert (resumed.weight[1] == 0.5).all() and float(resumed.bias[1]) == 0.5
    with pytest.raises(DataError, match="holds the state of a different CFT run"):
        _fit(problem, state_dir=state, options=dict(seed=9))


def test_bad_input(problem):
    p = dict(problem)
    with pytest.raises(DataError, match=r"val_features: expected 12 columns to match weight \(4, 12\), got 3"):
        fit_calibrated_head(p["train_features"], p["train_labels"], p["val_features"][:, :3], p["val_labels"],
                            p["weight"], p["bias"], progress=False)
    labels = p["train_labels"].copy().astype(np.float32)
    labels[3, 1] = 2
    with pytest.raises(DataError, match="train_labels: label at row 3, class 1 is 2.0"):
        fit_calibrated_head(p["train_features"], labels, p["val_features"], p["val_labels"], p["weight"], p["bias"],
                            progress=False)
    with pytest.raises(ConfigError, match="optimizer must be one of ga, bp, best, got 'sgd'"):
        CFTOptions(optimizer="sgd")
    with pytest.raises(ConfigError, match="early_stopping must be an integer >= 1, got 0"):
        CFTOptions(early_stopping=0)
    with pytest.raises(ConfigError, match=r"categories: \[7\] out of range"):
        _fit(problem, categories=[7])


def test_corrupt_resume_files_are_named(tmp_path):
    import json

    import numpy as np
    import pytest

    from labelwise.errors import DataError
    from labelwise.plugins.cft.calibrate import _State
    from labelwise.plugins.cft.options import CFTOptions

    data = {"x": np.zeros((2, 2), dtype=np.float32), "weight": np.zeros((3, 1), dtype=np.float32)}
    state = _State(tmp_path, data, CFTOptions())
    (tmp_path / "category00000-ga.json").write_text('{"row": [0.1, 0.2], "sco')
    with pytest.raises(DataError, match=r"category00000-ga\.json: unreadable CFT resume file"):
        state.load(0, "ga")
    (tmp_path / "category00001-ga.json").write_text(json.dumps({"row": [0.1]}))
    with pytest.raises(DataError, match=r"category00001-ga\.json: not a CFT category result"):
        state.load(1, "ga")
    (tmp_path / "category00002-ga.json").write_text(json.dumps({"row": [0.1, float("nan")], "score": 0.5,
                                                               "epochs_run": 3, "best_at": 1}))
    with pytest.raises(DataError, match=r"category00002-ga\.json: row holds NaN or infinite values"):
        state.load(2, "ga")
    (tmp_path / "state.json").write_text("[]")
    with pytest.raises(DataError, match=r"state\.json: expected a JSON object"):
        _State(tmp_path, data, CFTOptions())
    (tmp_path / "state.json").write_text(json.dumps({"fingerprint": "other"}))
    with pytest.raises(DataError, match=r"different CFT run .* another output folder \(--out\)"):
        _State(tmp_path, data, CFTOptions())
