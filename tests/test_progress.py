import io

import maskage.progress as progress
from maskage.progress import bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_and_the_final_count(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)  # a line at every update
    log = io.StringIO()
    assert list(bar(range(5), desc="crop cache", stream=log)) == [0, 1, 2, 3, 4]
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 2 and all(line.startswith("crop cache") for line in lines)
    assert "5/5" in lines[-1]


def test_a_log_is_quiet_between_intervals():
    log = io.StringIO()
    with bar(total=1000, desc="drawing masks", stream=log) as b:
        for _ in range(1000):
            b.update(1)
    lines = log.getvalue().splitlines()  # the 30 s interval never passes: the start and the end only
    assert len(lines) <= 3 and "1000/1000" in lines[-1]


def test_a_log_is_quiet_when_the_loss_changes_every_batch():
    log = io.StringIO()
    batches = bar(range(200), desc="age epoch 1/6", stream=log)
    for i in batches:
        batches.set_postfix(loss=f"{1 / (i + 1):.4f}")  # as the training loop does
        batches.set_description(f"age epoch 1/6 ({i})")
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3 and "200/200" in lines[-1] and "loss=0.0050" in lines[-1]


def test_disabled_writes_nothing_and_still_iterates():
    log = io.StringIO()
    assert list(bar(range(3), enabled=False, stream=log)) == [0, 1, 2]
    assert log.getvalue() == ""


def test_a_terminal_gets_tqdm_redrawing_in_place():
    tty = _Tty()
    list(bar(range(3), desc="video frames", stream=tty))
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()
