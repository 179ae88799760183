"""An output folder belongs to one job (compact_nlp.workdir): resume, refusal of a different job, --restart, and
never emptying a folder compact did not write."""

import pytest

from compact_nlp.workdir import JOB_FILE, Job, OutputInUseError, claim_output, input_digest


def test_same_job_resumes_and_different_job_is_refused(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\ngood,positive\n")
    out = tmp_path / "out"
    job = Job("compress", {"speedup": 3.0, "max_drop": 1.0}, {"data": input_digest(data)})
    assert claim_output(out, job) is False
    (out / "stage").mkdir()
    assert claim_output(out, job) is True and (out / "stage").is_dir()

    changed = Job("compress", {"speedup": 4.0, "max_drop": 1.0}, {"data": input_digest(data)})
    with pytest.raises(OutputInUseError, match=r"speedup: 3.0 -> 4.0.*--restart"):
        claim_output(out, changed)
    data.write_text("review,sentiment\nbad,negative\n")  # the same arguments on other data is another job too
    with pytest.raises(OutputInUseError, match="input data"):
        claim_output(out, Job("compress", {"speedup": 3.0, "max_drop": 1.0}, {"data": input_digest(data)}))

    assert claim_output(out, changed, restart=True) is False
    assert not (out / "stage").exists() and (out / JOB_FILE).is_file()


def test_a_path_argument_is_written_and_matches_the_same_path_as_text(tmp_path):
    """`compact demo` found GLUE as a Path (default_glue_dir) and could not write its job file; the user's
    --glue-dir is text. Either way it is one setting, and a tuple is the list its JSON reads back as."""
    glue = tmp_path / "glue_data"
    out = tmp_path / "out"
    assert claim_output(out, Job("embed", {"glue_dir": glue, "layers": (4,)})) is False
    assert claim_output(out, Job("embed", {"glue_dir": str(glue), "layers": [4]})) is True


def test_a_folder_of_other_files_is_never_claimed(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputInUseError, match="not written by compact"):
        claim_output(mine, Job("compress", {}), restart=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(OutputInUseError, match="is a file"):
        claim_output(mine / "notes.txt", Job("compress", {}))


def test_folder_digest_follows_content(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    before = input_digest(folder)
    (folder / "config.json").write_text('{"a": 1}')
    assert input_digest(folder) != before
    assert input_digest("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
