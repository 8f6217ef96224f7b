"""``her2radiomics station`` on the command line: create prints each token once and keeps only
hashes (the tokens file is private), bad input is one line and a non-zero exit."""
import json
import os
import stat

from HER2RadiomicsLib.cli import main
from HER2RadiomicsLib.station.store import StudyStore


def test_create_prints_tokens_once_and_stores_only_hashes(cohort, tmp_path, capsys):
    study, tok = tmp_path / "study", tmp_path / "tokens.json"
    rc = main(["station", "create", "--study", str(study), "--manifest",
               str(cohort / "cohort.csv"), "--readers", "A,B", "--start", "empty",
               "--seed", "9", "--tokens-out", str(tok)])
    out = capsys.readouterr().out
    assert rc == 0
    tokens = json.loads(tok.read_text())
    assert set(tokens) == {"A", "B", "coordinator"}
    assert stat.S_IMODE(os.stat(tok).st_mode) == 0o600
    for who, t in tokens.items():
        assert f"{who}: {t}" in out                      # shown once, on the screen
    text = (study / "study.json").read_text()
    assert not any(t in text for t in tokens.values())   # only hashes stored
    store = StudyStore(study)
    assert store.authenticate(tokens["A"]).reader == "A"
    assert store.authenticate(tokens["coordinator"]).role == "coordinator"
    assert store.meta["seed"] == 9 and store.meta["start"] == "empty"


def test_bad_input_is_one_line_and_a_nonzero_exit(cohort, tmp_path, capsys):
    study = tmp_path / "study"
    args = ["station", "create", "--study", str(study), "--manifest",
            str(cohort / "cohort.csv"), "--readers", "A"]
    assert main(args) == 0
    capsys.readouterr()
    for argv, needle in [
            (args, "a study exists already"),
            (["station", "serve", "--study", str(tmp_path / "none")], "no station study here"),
            (["station", "serve", "--study", str(study), "--bundle", str(tmp_path / "x.zip")],
             "x.zip"),
            (["station", "serve", "--study", str(study), "--port", "65535"], "within 1-65535"),
            (["station", "create", "--study", str(tmp_path / "s2"), "--manifest",
              str(cohort / "cohort.csv"), "--readers", "../x"], "reader names")]:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc != 0 and needle in err and "Traceback" not in err, (argv, err)
        assert len([line for line in err.splitlines() if line.strip()]) == 1, err


def test_a_cnn_start_makes_every_proposal_once_and_a_busy_port_is_one_line(cohort, tmp_path,
                                                                           capsys):
    """The CNN's proposals are made by `station create` (so no reader's process loads the
    CNN); a port already taken is said in one line before any process starts."""
    import socket
    study = tmp_path / "study"
    assert main(["station", "create", "--study", str(study), "--manifest",
                 str(cohort / "cohort.csv"), "--readers", "A", "--start", "cnn"]) == 0
    store = StudyStore(study)
    assert store.missing_proposals() == []
    assert all(store.proposal(c) is not None for c in store.cases)
    capsys.readouterr()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = main(["station", "serve", "--study", str(study), "--port", str(port)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1, err
    assert f"port {port}" in err[0] and "coordinator" in err[0] and "--port" in err[0]
