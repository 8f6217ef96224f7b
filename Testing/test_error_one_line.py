"""A reader error whose message spans lines (pandas' tokenising error ends in a line break) is
still one ``error:`` line on stderr, exit 2 (the error contract: one line per problem)."""
import pytest

from HER2RadiomicsLib.cli import main
from HER2RadiomicsLib.errors import one_line

RAGGED = "case_id,f1\na,1\nb,2,3\nc,4\n"          # row 3 has one field too many


def _error_lines(capsys) -> list:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_one_line_joins_a_message_over_lines():
    assert one_line(ValueError("Error tokenizing data. C error: Expected 2 fields\n")) == \
        "Error tokenizing data. C error: Expected 2 fields"
    assert one_line(ValueError("a\n  b\r\nc")) == "a b c"
    assert one_line(ValueError("")) == "ValueError"


def test_a_ragged_feature_table_is_one_error_line(tmp_path, capsys):
    (tmp_path / "f.csv").write_text(RAGGED)
    (tmp_path / "l.csv").write_text("case_id,her2\na,1\nb,0\nc,1\n")
    rc = main(["train", "--recipe", "cui2023", "--features", str(tmp_path / "f.csv"),
               "--labels", str(tmp_path / "l.csv"), "--out", str(tmp_path / "run")])
    lines = _error_lines(capsys)
    assert rc == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {tmp_path / 'f.csv'}: cannot read feature table")
    assert lines[0].endswith("saw 3)")


def test_a_ragged_reader_manifest_is_one_error_line(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("case_id,image,reader,mask\na,i.png,R1,m.png\n"
                                    "b,i.png,R1,m.png,extra\n")
    rc = main(["reader-study", "--manifest", str(tmp_path / "m.csv"),
               "--out", str(tmp_path / "rs")])
    lines = _error_lines(capsys)
    assert rc == 2
    assert len(lines) == 1, lines
    assert str(tmp_path / "m.csv") in lines[0]


@pytest.mark.parametrize("text", ["a: [1, 2\n", "{: :\n  - ]"])
def test_a_broken_recipe_is_one_error_line(tmp_path, capsys, text):
    (tmp_path / "r.yaml").write_text(text)
    (tmp_path / "f.csv").write_text("case_id,f1\na,1\n")
    rc = main(["train", "--recipe", str(tmp_path / "r.yaml"), "--features",
               str(tmp_path / "f.csv"), "--labels", str(tmp_path / "f.csv"),
               "--out", str(tmp_path / "run")])
    lines = _error_lines(capsys)
    assert rc == 2
    assert len(lines) == 1, lines
