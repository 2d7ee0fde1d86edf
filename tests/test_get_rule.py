"""One way to call every rule and one vocabulary for names: ``get_rule(name, **options)`` binds
options (``f`` for every rule, passed only to the rules that take it), names match in any case,
with ``-``/``_``/space equivalent and by the names the tables print, unknown names suggest the
closest ones; every subcommand reads ``--rules``/``--attacks``/``--seeds``/``--out`` alike."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest

import robustagg
from robustagg._registry import DISPLAY_NAMES, BoundRule, call_with_supported, normalize_name
from robustagg.cli import build_parser, main
from robustagg.training import experiment
from robustagg.training.federated import DATA_ATTACKS

F = 2


def _matrix(n=11, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def _takes(fn, name):
    return name in inspect.signature(fn).parameters


def _extra(fn, G):
    """What a rule needs besides f to run on G: a seed for the random rules, FLTrust's root."""
    extra = {}
    if _takes(fn, "rng"):
        extra["rng"] = 0
    if _takes(fn, "root_gradient"):
        extra["root_gradient"] = G[F:].mean(axis=0)
    return extra


# ------------------------------------------------------------------------------------------------
# binding


def test_without_options_get_rule_returns_the_registered_function():
    for name, fn in robustagg.RULES.items():
        assert robustagg.get_rule(name) is fn


def test_bound_options_reach_the_rule_and_a_call_adds_or_overrides():
    G = _matrix()
    bound = robustagg.get_rule("multi_krum", f=F, m=3)
    assert isinstance(bound, BoundRule)
    assert bound.options == {"f": F, "m": 3} and bound.keywords == {"f": F, "m": 3}
    np.testing.assert_array_equal(bound(G), robustagg.multi_krum(G, F, 3))
    np.testing.assert_array_equal(bound(G, m=5), robustagg.multi_krum(G, F, 5))
    np.testing.assert_array_equal(bound(G, f=1), robustagg.multi_krum(G, 1, 3))
    out, info = bound(G, return_info=True)
    np.testing.assert_array_equal(out, robustagg.multi_krum(G, F, 3))
    assert info.kept.sum() == 3
    assert bound.options == {"f": F, "m": 3}  # a call leaves the bound options as they were


@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_f_may_be_given_for_every_rule_and_reaches_only_the_rules_that_take_it(name):
    fn = robustagg.RULES[name]
    G = _matrix()
    extra = _extra(fn, G)
    bound = robustagg.get_rule(name, f=F, **extra)
    takes_f = _takes(fn, "f")
    assert ("f" in bound.keywords) is takes_f
    assert ("f" in inspect.signature(bound).parameters) is takes_f
    expected = fn(G, f=F, **extra) if takes_f else fn(G, **extra)
    np.testing.assert_array_equal(bound(G), expected)


def test_f_reaches_a_rule_exactly_when_its_signature_has_f(monkeypatch):
    seen = []

    def with_f(grads, f, *, scale=1.0):
        seen.append(("with_f", f, scale))
        return grads.mean(axis=0) * scale

    def without_f(grads, *, scale=1.0):
        seen.append(("without_f", scale))
        return grads.mean(axis=0) * scale

    monkeypatch.setitem(robustagg.RULES, "spy_with_f", with_f)
    monkeypatch.setitem(robustagg.RULES, "spy_without_f", without_f)
    G = _matrix()
    robustagg.get_rule("spy_with_f", f=3, scale=2.0)(G)
    robustagg.get_rule("spy_without_f", f=3, scale=2.0)(G)
    robustagg.get_rule("spy_without_f", scale=2.0)(G, f=4)  # f given at the call: dropped too
    assert seen == [("with_f", 3, 2.0), ("without_f", 2.0), ("without_f", 2.0)]


def test_a_composition_by_name_binds_f():
    G = _matrix()
    bound = robustagg.get_rule("NNM + Krum", f=F)
    assert repr(bound) == "robustagg.get_rule('nnm+krum', f=2)"
    np.testing.assert_array_equal(bound(G), robustagg.pipeline("nnm", "krum")(G, f=F))


def test_a_callable_is_bound_as_it_is():
    def rule(grads, *, scale=1.0):
        return grads.sum(axis=0) * scale

    G = _matrix()
    np.testing.assert_array_equal(robustagg.get_rule(rule, f=F, scale=3.0)(G), rule(G, scale=3.0))
    assert robustagg.get_rule(rule) is rule


@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_an_option_the_rule_does_not_take_is_a_type_error_at_get_rule_naming_it(name):
    with pytest.raises(TypeError) as err:
        robustagg.get_rule(name, f=F, no_such_option=1)
    text = str(err.value)
    assert f"'{name}'" in text and "'no_such_option'" in text
    taken = set(inspect.signature(robustagg.RULES[name]).parameters) - {"grads"}
    assert all(option in text for option in taken)  # the options it takes


def test_a_wrong_option_is_refused_before_any_call(monkeypatch):
    calls = []
    monkeypatch.setitem(robustagg.RULES, "spy", lambda grads, *, tau=1.0: calls.append(tau))
    with pytest.raises(TypeError, match=r"rule 'spy' takes no option 'rng'; its options: tau"):
        robustagg.get_rule("spy", rng=0)
    with pytest.raises(TypeError, match="'mean' takes no option 'rng'; its options: nonfinite, return_in"):
        robustagg.get_rule("mean", f=F, rng=0)
    bound = robustagg.get_rule("spy", tau=2.0)
    with pytest.raises(TypeError, match="no option 'rng'"):
        bound(_matrix(), rng=0)
    with pytest.raises(TypeError, match="by keyword"):
        bound(_matrix(), 3)
    assert calls == []


@pytest.mark.parametrize(
    "bad, error", [(2.5, TypeError), (True, TypeError), ("2", TypeError), (-1, ValueError)]
)
def test_a_bad_f_is_refused_at_get_rule(bad, error):
    with pytest.raises(error, match="krum: argument 'f' must be"):
        robustagg.get_rule("krum", f=bad)
    with pytest.raises(error, match="mean: argument 'f' must be"):
        robustagg.get_rule("mean", f=bad)  # f does not reach the mean, but a wrong f is a mistake


def test_generic_code_calls_a_bound_rule_through_its_signature():
    G = _matrix()
    mean = robustagg.get_rule("mean", f=F)
    # call_with_supported passes what the signature accepts: rng and f are dropped for the mean
    np.testing.assert_array_equal(call_with_supported(mean, G, f=F, rng=0), robustagg.mean(G))
    dnc = robustagg.get_rule("dnc", f=F)
    np.testing.assert_array_equal(call_with_supported(dnc, G, f=F, rng=3), robustagg.dnc(G, F, rng=3))


# ------------------------------------------------------------------------------------------------
# pickling


@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_bound_rules_pickle_and_aggregate_identically(name):
    G = _matrix()
    extra = _extra(robustagg.RULES[name], G)  # FLTrust's root from finite rows
    G[4] = np.nan  # the non-finite policy travels too
    bound = robustagg.get_rule(name, f=F, **extra)
    copy = pickle.loads(pickle.dumps(bound))
    assert repr(copy) == repr(bound) and copy.options.keys() == bound.options.keys()
    a, b = bound(G, return_info=True), copy(G, return_info=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1].kept, b[1].kept)


def test_a_bound_composition_pickles():
    G = _matrix()
    bound = robustagg.get_rule("bucketing+trimmed_mean", f=1, rng=0)
    copy = pickle.loads(pickle.dumps(bound))
    np.testing.assert_array_equal(copy(G), bound(G))


def test_repr_is_the_call_that_builds_it():
    assert repr(robustagg.get_rule("Multi-Krum", f=2, m=3)) == "robustagg.get_rule('multi_krum', f=2, m=3)"
    assert robustagg.get_rule("SignGuard-Sim", rng=0).__name__ == "signguard_sim"


# ------------------------------------------------------------------------------------------------
# names


def _spellings(name: str) -> list[str]:
    words = name.split("_")
    return [
        name.upper(),
        name.title(),
        "-".join(words),
        " ".join(words),
        " ".join(w.capitalize() for w in words),
        f"  {name}  ",
    ]


def test_normalize_name():
    assert normalize_name(" Multi-Krum ") == normalize_name("multi krum") == "multi_krum"
    assert normalize_name("SignGuard - Sim") == "signguard_sim"


@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_every_rule_is_found_in_any_case_and_with_any_separator(name):
    for text in _spellings(name):
        assert robustagg.get_rule(text) is robustagg.RULES[name], text


@pytest.mark.parametrize("name", sorted(robustagg.ATTACKS))
def test_every_attack_is_found_in_any_case_and_with_any_separator(name):
    for text in _spellings(name):
        assert robustagg.get_attack(text) is robustagg.ATTACKS[name], text


def test_every_name_the_tables_print_is_found():
    # the experiment tables' own mapping, and the registry's
    assert experiment.PRETTY, "the experiment tables' name mapping is empty"
    shown = [*experiment.PRETTY.items(), *DISPLAY_NAMES.items()]
    checked = 0
    for name, text in shown:
        for spelling in (text, text.upper(), text.lower(), text.replace("-", " ")):
            if name in robustagg.RULES:
                assert robustagg.get_rule(spelling) is robustagg.RULES[name], spelling
                checked += 1
            elif name in robustagg.ATTACKS:
                assert robustagg.get_attack(spelling) is robustagg.ATTACKS[name], spelling
                checked += 1
    # the experiment's own rows and columns are all among them
    names = {name for name, _ in shown}
    assert set(experiment.TABLE1_RULES) <= names and set(experiment.TABLE1_ATTACKS) <= names
    assert checked >= 4 * len(set(experiment.TABLE1_RULES) & set(robustagg.RULES))


def test_registered_display_names_are_distinct_and_point_at_registered_names():
    keys = [normalize_name(text) for text in DISPLAY_NAMES.values()]
    assert len(keys) == len(set(keys))
    known = set(robustagg.RULES) | set(robustagg.ATTACKS) | set(robustagg.PREAGGREGATORS) | set(DATA_ATTACKS)
    assert set(DISPLAY_NAMES) <= known


@pytest.mark.parametrize(
    "lookup, text, suggestion",
    [
        (robustagg.get_rule, "multikrun", "multi_krum"),
        (robustagg.get_rule, "Trimmed-Maen", "trimmed_mean"),
        (robustagg.get_rule, "signgaurd", "signguard"),
        (robustagg.get_attack, "min-maks", "min_max"),
        (robustagg.get_attack, "sign_flp", "sign_flip"),
    ],
)
def test_an_unknown_name_suggests_the_closest_and_lists_them_all(lookup, text, suggestion):
    with pytest.raises(ValueError) as err:
        lookup(text)
    message = str(err.value)
    assert f"unknown {'rule' if lookup is robustagg.get_rule else 'attack'} {text!r}" in message
    assert f"did you mean '{suggestion}'" in message
    table = robustagg.RULES if lookup is robustagg.get_rule else robustagg.ATTACKS
    assert all(name in message for name in table)


def test_an_unknown_step_of_a_composition_names_the_composition():
    with pytest.raises(ValueError, match=r"in 'nnm\+krun': unknown rule 'krun' \(did you mean 'krum'"):
        robustagg.get_rule("nnm+krun")
    with pytest.raises(ValueError, match="unknown pre-aggregator 'nmm'.*did you mean 'nnm'"):
        robustagg.get_rule("nmm+krum")


def test_a_pre_aggregator_alone_is_not_a_rule_and_the_message_says_how_to_compose_it():
    with pytest.raises(ValueError, match=r"'nnm' is a pre-aggregator: compose it with a rule, as in 'nnm\+"):
        robustagg.get_rule("NNM")
    assert robustagg.get_rule("NNM+mean")(_matrix()).shape == (6,)


def test_names_equal_up_to_case_are_ambiguous(monkeypatch):
    monkeypatch.setitem(robustagg.RULES, "my-rule", robustagg.mean)
    monkeypatch.setitem(robustagg.RULES, "my_rule", robustagg.median)
    assert robustagg.get_rule("my-rule") is robustagg.mean  # the exact name first
    with pytest.raises(ValueError, match="ambiguous"):
        robustagg.get_rule("My Rule")


def test_a_name_must_be_a_string_or_a_callable():
    with pytest.raises(TypeError, match="get_rule: argument 'name'"):
        robustagg.get_rule(3)
    with pytest.raises(TypeError, match="get_attack: the attack's name must be a str, got 3"):
        robustagg.get_attack(3)


# ------------------------------------------------------------------------------------------------
# the command line: --rules, --attacks, --seeds, --out read alike by every subcommand

SUBCOMMANDS = ("throughput", "bench", "matrix", "experiment")
WITH_ATTACKS = ("bench", "matrix", "experiment")
LIST_FORMS = [
    ["mean,median"],
    ["mean", "median"],
    ["mean,", "median"],
    ["mean", ",median"],
    ["Mean", "MEDIAN"],
]


@pytest.mark.parametrize("form", LIST_FORMS, ids=" ".join)
@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_reads_rules_comma_or_space_separated(sub, form):
    assert build_parser().parse_args([sub, "--rules", *form]).rules == ["mean", "median"]


@pytest.mark.parametrize("form", [["lie,Min-Max"], ["lie", "Min-Max"], ["LIE,", "min max"]], ids=" ".join)
@pytest.mark.parametrize("sub", WITH_ATTACKS)
def test_every_subcommand_reads_attacks_comma_or_space_separated(sub, form):
    assert build_parser().parse_args([sub, "--attacks", *form]).attacks == ["lie", "min_max"]


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_reads_display_names(sub):
    assert build_parser().parse_args([sub, "--rules", "Multi-Krum", "TrMean"]).rules == [
        "multi_krum",
        "trimmed_mean",
    ]


UNKNOWN = [(sub, "--rules", "multikrun", "multi_krum") for sub in SUBCOMMANDS] + [
    (sub, "--attacks", "minmaks", "min_max") for sub in WITH_ATTACKS
]


@pytest.mark.parametrize("sub, flag, text, suggestion", UNKNOWN)
def test_an_unknown_name_is_exit_2_with_the_suggestion(sub, flag, text, suggestion, capsys):
    with pytest.raises(SystemExit) as exc:
        main([sub, flag, "mean" if flag == "--rules" else "lie", text])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: unknown" in err and f"did you mean '{suggestion}'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("sub", ("matrix", "experiment"))
@pytest.mark.parametrize(
    "form", [["0", "1", "2"], ["0,1,2"], ["0,", "1", "2"], ["2", "0", "1", "1"]], ids=" ".join
)
def test_seeds_is_a_list_of_seeds(sub, form):
    assert build_parser().parse_args([sub, "--seeds", *form]).seeds == [0, 1, 2]


@pytest.mark.parametrize("sub", ("matrix", "experiment"))
def test_a_single_seed_is_that_seed(sub):
    assert build_parser().parse_args([sub, "--seeds", "3"]).seeds == [3]


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_names_its_output_out(sub, tmp_path):
    path = str(tmp_path / "result")
    assert build_parser().parse_args([sub, "--out", path]).out == path


@pytest.mark.parametrize("sub", ("throughput", "bench", "matrix"))
def test_an_output_file_in_a_missing_directory_is_refused_before_any_work(sub, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([sub, "--out", str(tmp_path / "no" / "such" / "file.md")])
    assert exc.value.code == 2
    assert "argument --out: the directory of" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_the_old_output_option_of_matrix_still_works_with_a_warning(flag, tmp_path, capsys):
    path = str(tmp_path / "t.md")
    assert build_parser().parse_args(["matrix", flag, path]).out == path
    assert f"{flag} is deprecated, use --out" in capsys.readouterr().err


def test_throughput_runs_on_a_list_of_rules_and_writes_out(tmp_path, capsys):
    out = tmp_path / "t.txt"
    argv = ["throughput", "--n", "6", "--d", "16", "--f", "1", "--repeats", "1", "--out", str(out)]
    assert main([*argv, "--rules", "Mean,", "nnm+krum"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["mean", "nnm+krum"]
    assert capsys.readouterr().out == ""  # the table went to the file


def test_the_experiment_command_takes_every_name_its_tables_print():
    parser = build_parser()
    for name, text in experiment.PRETTY.items():
        if name in robustagg.RULES:
            assert parser.parse_args(["experiment", "--rules", text]).rules == [name], text
        elif name in robustagg.ATTACKS or name in DATA_ATTACKS:
            assert parser.parse_args(["experiment", "--attacks", text]).attacks == [name], text
