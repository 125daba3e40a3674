"""The Gaussian-mixture VAE, M2 and the categorical VAE: what they recover, their
conveniences, labels, saving, comparison."""

import math

import pyro
import pytest
import torch
from torch import nn

import pyro_vae as pv
from pyro_vae.inference import clustering_accuracy, compare, discrete_posterior, elbo_terms, fit
from pyro_vae.models import MLP, CategoricalVAE, GaussianMixtureVAE, SemiSupervisedVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_gmvae_recovers_the_gw_populations_without_labels():
    """Three clusters, fitted by enumeration on the unlabelled catalogue, matched to the
    three populations: chance (every event in one cluster) is the largest population's
    share, 0.465 of the test events; the fit recovers all three well above it."""
    data = pv.load_dataset("gw")
    pyro.set_rng_seed(0)
    model = GaussianMixtureVAE(data.x_dim, 3, z_dim=1, likelihood="normal_per_feature",
                               hidden=[64], learn_weights=False)
    fit(model, data.train, estimator="enum", epochs=10, batch_size=128, lr=1e-2, seed=0,
        quiet=True, monitor_size=100)
    result = pv.evaluate(model, data.test, num_samples=50, elbo_particles=2,
                         labels=data.test_labels)
    matching = clustering_accuracy(model.y_posterior(data.test).argmax(-1), data.test_labels,
                                   num_clusters=3)
    assert result.accuracy_kind == "clustering"
    assert result.accuracy == pytest.approx(matching.accuracy)
    assert matching.chance == pytest.approx(279 / 600)
    assert matching.accuracy > 0.75
    bns = data.info["label_names"].index("BNS")
    assert matching.confusion[:, bns].max() >= 0.95 * matching.confusion[:, bns].sum()


def test_m2_with_few_labels_beats_a_classifier_trained_on_them_alone(binary_digits):
    """50 labels (5 per class) of 1258 digits: M2 (enumeration, auxiliary term) against the
    same classifier network trained on the 50 labelled points alone."""
    data = binary_digits
    labels = pv.semi_supervised_labels(data.train_labels, 50, seed=0)
    labelled = labels >= 0
    assert int(labelled.sum()) == 50
    assert torch.bincount(labels[labelled]).tolist() == [5] * 10

    torch.manual_seed(0)
    alone = MLP(64, [128], 10)
    optimizer = torch.optim.Adam(alone.parameters(), lr=3e-3)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(alone(data.train[labelled]), labels[labelled]).backward()
        optimizer.step()
    alone_accuracy = (alone(data.test).argmax(-1) == data.test_labels).float().mean().item()

    pyro.set_rng_seed(0)
    m2 = SemiSupervisedVAE(64, 10, z_dim=8, hidden=[128], alpha=1.0,
                           num_labelled=int(labelled.sum()))
    fit(m2, (data.train, labels), estimator="enum", epochs=20, batch_size=64, lr=1e-2,
        seed=0, quiet=True, monitor_size=100)
    result = pv.evaluate(m2, data.test, num_samples=20, elbo_particles=2,
                         labels=data.test_labels)
    assert result.accuracy_kind == "classification"
    assert result.accuracy == pytest.approx(
        (m2.classify(data.test) == data.test_labels).float().mean().item())
    assert result.accuracy > alone_accuracy, (result.accuracy, alone_accuracy)


# ---- labels -------------------------------------------------------------------------------------
def test_semi_supervised_labels_are_balanced_seeded_and_checked():
    labels = torch.arange(30) % 3
    kept = pv.semi_supervised_labels(labels, 7, seed=1)
    assert int((kept >= 0).sum()) == 7
    assert torch.equal(kept[kept >= 0], labels[kept >= 0])
    assert torch.bincount(kept[kept >= 0]).tolist() == [3, 2, 2]
    assert torch.equal(kept, pv.semi_supervised_labels(labels, 7, seed=1))
    assert not torch.equal(kept, pv.semi_supervised_labels(labels, 7, seed=2))
    assert torch.equal(pv.semi_supervised_labels(labels, 100), labels)
    assert bool((pv.semi_supervised_labels(labels, 0) == -1).all())
    with pytest.raises(ValueError, match="cannot cover the 3 classes"):
        pv.semi_supervised_labels(labels, 2)
    with pytest.raises(ValueError, match="fewer than the"):
        pv.semi_supervised_labels(torch.tensor([0, 1, 1, 1]), 3)


def test_m2_checks_its_labels_and_pins_the_guide_to_them():
    model = SemiSupervisedVAE(6, 3, z_dim=2, hidden=[8])
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    with pytest.raises(TypeError, match="1-D integer tensor"):
        model.guide(x, torch.zeros(4))
    with pytest.raises(ValueError, match=r"-1\.\.2"):
        model.guide(x, torch.tensor([0, 1, 5, -1]))
    with pytest.raises(ValueError, match="4 datapoints"):
        model.guide(x, torch.tensor([0, 1]))
    labels = torch.tensor([2, -1, 0, -1])
    trace = pyro.poutine.trace(model.guide).get_trace(x, labels)
    probs = trace.nodes["y"]["fn"].probs
    assert torch.equal(probs[0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(probs[2], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(probs[1], model.y_posterior(x)[1])


def test_m2_labelled_elbo_is_kingmas_l_of_x_and_y():
    """For a labelled point, the ELBO (y enumerated) is L(x, y) = E_q(z|x,y)[log p(x|y,z) +
    log p(y) + log p(z) - log q(z|x,y)], estimated here independently."""
    torch.manual_seed(0)
    model = SemiSupervisedVAE(6, 3, z_dim=2, hidden=[8]).eval()
    x = torch.bernoulli(torch.full((2, 6), 0.5))
    labels = torch.tensor([1, 2])
    k = 20000
    onehot = nn.functional.one_hot(labels, 3).float()
    q = model.guide_family.distribution(torch.cat([x, onehot], -1))
    z = q.sample((k,))
    p_x = model.likelihood.distribution(model.decoder(torch.cat(
        [z, onehot.expand(k, 2, 3)], -1)))
    terms = (p_x.log_prob(x) - math.log(3)
             + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z))
    independent = terms.mean(0)
    reported = elbo_terms(model, (x, labels), num_particles=k)["elbo"]
    tolerance = 5 * terms.std(0) / math.sqrt(k) * math.sqrt(2)
    assert bool(((reported - independent).abs() < tolerance).all())


def test_m2_auxiliary_term_is_a_training_term_only(binary_digits):
    x = binary_digits.train[:20]
    labels = torch.where(torch.arange(20) < 8, binary_digits.train_labels[:20], -1)
    model = SemiSupervisedVAE(64, 10, z_dim=2, hidden=[8], alpha=0.5, num_labelled=8)
    assert "classification" in pyro.poutine.trace(model.model).get_trace(x, labels).nodes
    model.eval()
    assert "classification" not in pyro.poutine.trace(model.model).get_trace(x, labels).nodes
    without = SemiSupervisedVAE(64, 10, z_dim=2, hidden=[8], alpha=0.0)
    without.load_state_dict(model.state_dict())
    a = pv.evaluate(model, x, num_samples=10, elbo_particles=2)
    b = pv.evaluate(without, x, num_samples=10, elbo_particles=2)
    assert (a.log_likelihood, a.elbo) == (b.log_likelihood, b.elbo)
    with pytest.raises(ValueError, match="alpha"):
        SemiSupervisedVAE(64, 10, alpha=-1.0)


# ---- posterior over y, accuracies ----------------------------------------------------------
def test_clustering_accuracy_uses_the_best_one_to_one_matching():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    clusters = torch.tensor([2, 2, 1, 0, 0, 1, 1, 1, 1, 3])
    result = clustering_accuracy(clusters, labels, num_clusters=4)
    assert result.mapping == {0: 1, 1: 2, 2: 0}
    assert result.accuracy == pytest.approx(8 / 10)
    assert result.chance == pytest.approx(0.5)
    assert result.confusion.shape == (4, 3)
    with pytest.raises(ValueError, match="missing ones"):
        clustering_accuracy(clusters, labels - 1)


def test_posterior_over_y_from_the_guide_and_from_the_model(binary_digits):
    x = binary_digits.test[:12]
    model = GaussianMixtureVAE(64, 4, z_dim=2, hidden=[16])
    guide = discrete_posterior(model, x)
    torch.testing.assert_close(guide, model.y_posterior(x))
    exact = discrete_posterior(model, x, method="model", num_samples=50)
    assert exact.shape == (12, 4)
    torch.testing.assert_close(exact.sum(-1), torch.ones(12))
    categorical = CategoricalVAE(64, num_latents=2, num_classes=3, hidden=[8])
    torch.testing.assert_close(discrete_posterior(categorical, x, site="y1"),
                               categorical.y_posterior(x)[:, 1])
    with pytest.raises(KeyError, match="site=..."):
        discrete_posterior(categorical, x, site="y")
    with pytest.raises(ValueError, match="unknown posterior method"):
        discrete_posterior(model, x, method="exact")


# ---- conveniences, saving, comparison -------------------------------------------------------
@pytest.mark.parametrize("build", [
    lambda: GaussianMixtureVAE(64, 4, z_dim=3, hidden=[16]),
    lambda: SemiSupervisedVAE(64, 4, z_dim=3, hidden=[16]),
    lambda: CategoricalVAE(64, num_latents=3, num_classes=4, hidden=[16])])
def test_models_encode_decode_sample_and_save(build, binary_digits, tmp_path):
    model = build()
    x = binary_digits.test[:5]
    code = model.encode(x)
    assert code.shape[0] == 5 and torch.isfinite(code).all()
    assert model.decode(code).shape == (5, 64)
    assert model.reconstruct(x).shape == (5, 64)
    latent = model.sample_latent(7)
    assert latent.shape == (7, code.shape[1])
    assert model.sample(7).shape == (7, 64)
    assert set(model.sample_observations(latent).unique().tolist()) <= {0.0, 1.0}
    pv.save_model(model, tmp_path / "model.pt")
    loaded = pv.load_model(tmp_path / "model.pt")
    assert type(loaded) is type(model)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    groups = pv.inference.parameter_groups(model)
    assert "decoder" in groups
    baseline = {id(p) for p in model.baseline_network.parameters()}
    assert not baseline & {id(p) for params in groups.values() for p in params}


def test_gmvae_samples_per_component_and_class_figure(binary_digits):
    model = GaussianMixtureVAE(64, 3, z_dim=2, hidden=[8])
    z = model.sample_latent(500, c=1)
    torch.testing.assert_close(z.mean(0), model.component_locs[1].detach(), atol=0.2, rtol=0)
    with pytest.raises(ValueError, match="0..2"):
        model.sample_latent(3, c=5)
    figure = pv.plot_class_samples(model, 2, (1, 8, 8))
    assert len(figure.axes) == 6


def test_compare_accepts_the_discrete_estimators_and_reports_accuracy(binary_digits):
    data = binary_digits
    result = compare(lambda seed: GaussianMixtureVAE(64, 10, z_dim=2, hidden=[16]),
                     data.train[:200], data.test[:40], ["enum", "score:baseline=avg",
                                                        "relaxed"],
                     seeds=[0], epochs=1, batch_size=100, eval_samples=10, elbo_particles=2,
                     khat_samples=None, test_labels=data.test_labels[:40])
    rows = {row["estimator"]: row for row in result.summary()}
    assert set(rows) == {"enum", "score:baseline=avg", "relaxed"}
    for run in result.runs:
        assert run.evaluation["discrete_sites"] == {"y": "summed exactly"}
        assert 0.0 <= run.metrics["accuracy"] <= 1.0
        assert run.evaluation["accuracy_kind"] == "clustering"
    markdown = pv.studies.comparison.comparison_markdown(result)
    assert "test accuracy" in markdown and "y summed exactly" in markdown
    with pytest.raises(ValueError, match="one label per test point"):
        compare(lambda seed: GaussianMixtureVAE(64, 3, z_dim=2, hidden=[8]), data.train[:50],
                data.test[:10], ["enum"], seeds=[0], epochs=1, test_labels=data.test_labels)


def test_m2_auxiliary_weight_per_labelled_point_is_unbiased(binary_digits):
    """w = alpha N / n_l per labelled point inside the data plate (scale N/B): a batch's term
    is (N/B) w sum_batch log q, whose mean over the batches of an epoch is alpha N times the
    mean of log q over the labelled points, as in Kingma et al.'s J^alpha."""
    n, n_labelled, batch = 40, 8, 10
    x = binary_digits.train[:n]
    labels = torch.where(torch.arange(n) % 5 == 0, binary_digits.train_labels[:n], -1)
    model = SemiSupervisedVAE(64, 10, z_dim=2, hidden=[8], alpha=0.3, num_labelled=n_labelled)
    assert model.labelled_weight(n) == pytest.approx(0.3 * n / n_labelled)
    log_q = torch.log_softmax(model.classifier(x), -1).gather(
        -1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[labels >= 0]
    terms = []
    for start in range(0, n, batch):
        rows = slice(start, start + batch)
        trace = pyro.poutine.trace(model.model).get_trace(x[rows], labels[rows], num_data=n)
        trace.compute_log_prob()
        terms.append(trace.nodes["classification"]["log_prob_sum"])
    epoch_mean = torch.stack(terms).mean()
    assert epoch_mean.item() == pytest.approx(0.3 * n * log_q.mean().item(), rel=1e-5)
    # Pyro's units: the weight per labelled point is aux_weight, whatever N and n_l
    pyros = SemiSupervisedVAE(64, 10, z_dim=2, hidden=[8], aux_weight=46.0)
    assert pyros.labelled_weight(50000) == 46.0
    with pytest.raises(ValueError, match="num_labelled"):
        SemiSupervisedVAE(64, 10, z_dim=2, hidden=[8]).model(x[:10], labels[:10], num_data=n)


def test_m2_stratified_batches_estimate_the_same_objective_exactly(binary_digits):
    """Labelled rows in every batch (``labelled_per_batch``, ``LabelledInEveryBatch``): the
    unlabelled rows scaled by n_u / B_u, the labelled by n_l / B_l. Averaged over every
    unlabelled batch of a pass and every choice of B_l labelled rows, the loss is the
    full-data objective of the mixed model (auxiliary term included), to float rounding,
    with every draw of z fixed at its guide mean (noise 0) so that both are deterministic."""
    from itertools import combinations

    from pyro.poutine.messenger import Messenger

    from pyro_vae.inference.batching import LabelledInEveryBatch
    from pyro_vae.inference.estimators import make_estimator
    from pyro_vae.inference.log_densities import unwrap_distribution

    class AtTheMean(Messenger):
        def _pyro_sample(self, msg):
            if msg["name"] in ("z", "z_labelled"):
                msg["value"] = unwrap_distribution(msg["fn"]).loc

    n, labelled_rows, per_batch = 12, [0, 3, 6, 9], 2
    x = binary_digits.train[:n].double()
    labels = torch.full((n,), -1)
    labels[labelled_rows] = binary_digits.train_labels[labelled_rows] % 3
    torch.manual_seed(0)
    mixed = SemiSupervisedVAE(64, 3, z_dim=2, hidden=[5], alpha=0.3, num_labelled=4).double()
    stratified = SemiSupervisedVAE(64, 3, z_dim=2, hidden=[5], alpha=0.3, num_labelled=4,
                                   labelled_per_batch=per_batch).double()
    stratified.load_state_dict(mixed.state_dict())
    elbo = make_estimator("enum")
    full = elbo.loss(mixed.model, AtTheMean()(mixed.guide), x, labels, num_data=n)
    unlabelled = [i for i in range(n) if i not in labelled_rows]
    losses = [elbo.loss(stratified.model, AtTheMean()(stratified.guide), x[rows], labels[rows],
                        num_data=n)
              for half in (unlabelled[:4], unlabelled[4:])
              for pair in combinations(labelled_rows, per_batch)
              for rows in [torch.tensor(half + list(pair))]]
    assert sum(losses) / len(losses) == pytest.approx(full, rel=1e-9)

    def mean_loss(model, halves):
        values = [elbo.loss(model.model, AtTheMean()(model.guide), x[rows], labels[rows],
                            num_data=n)
                  for half in halves for pair in combinations(labelled_rows, per_batch)
                  for rows in [torch.tensor(half + list(pair))]]
        return sum(values) / len(values)

    # balance_labelled: the labelled part (L and the auxiliary term) weighs n_u / n_l = 2 times
    labelled_part = mean_loss(stratified, [[]])
    balanced = SemiSupervisedVAE(64, 3, z_dim=2, hidden=[5], alpha=0.3, num_labelled=4,
                                 labelled_per_batch=per_batch, balance_labelled=True).double()
    balanced.load_state_dict(mixed.state_dict())
    assert mean_loss(balanced, [unlabelled[:4], unlabelled[4:]]) == pytest.approx(
        full + (8 / 4 - 1) * labelled_part, rel=1e-9)

    source = LabelledInEveryBatch((x, labels), per_batch)
    assert (len(source), source.num_datapoints) == (8, 12)
    batch_x, batch_labels = source.get(torch.arange(3))
    assert len(batch_x) == 5 and int((batch_labels >= 0).sum()) == per_batch
    with pytest.raises(ValueError, match="holds 4 labelled rows"):
        stratified.model(x[:10], labels[:10], num_data=n)
    result = fit(stratified, source, estimator="enum", epochs=1, batch_size=4, quiet=True)
    assert math.isfinite(result.history[-1]["loss"])
