"""report.pdf of the evidence pack: printed by headless Chromium, covered by the manifest, checked
by ``evidence verify``; a pack built where Chromium is missing or fails still builds, without it;
and a monthly pack whose period's end is not sealed gets the platform's seal first.

The visual checks look at what a reader gets: Chromium's screenshot of report.html and the first
page of report.pdf rasterised (pypdfium2), asserting real properties (size, not blank, text on it,
the tenant and the period in the PDF's text). Tests that need Chromium skip where it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack import chromium
from include.evidence import pdf, report
from include.evidence.pack import EvidencePackError, build_pack
from include.evidence.verify import verify_pack
from tests.unit.evidence.test_evidence_pack import KEYS, SIGNER, T0, MemoryStore, _mixed_store
from tests.unit.evidence.test_report import ATTACK, END, SLA, START, mixed_month

needs_chromium = pytest.mark.skipif(not chromium.BINARY.exists(), reason="Debian chromium is not installed")


def _build(store: MemoryStore, out: Path, **kwargs: Any) -> Any:
    return build_pack(
        store, tenant="acme", start=T0, end=T0 + timedelta(days=30), keys=KEYS, out_dir=out, **kwargs
    )


def _summary(pack: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((pack / "summary.json").read_text())
    return summary


def _not_blank(image: Any) -> None:
    grey = image.convert("L")
    colours = grey.getcolors(maxcolors=256 * 256) or []
    dark = sum(count for count, level in colours if isinstance(level, int) and level < 128)
    assert len(colours) > 10, "the image is blank"
    assert dark > 1000, "the image has no text"


# --- the command ----------------------------------------------------------------------------------


def test_chromium_runs_offline_and_keeps_its_sandbox_unless_root(tmp_path: Path) -> None:
    source, target, profile = tmp_path / "r.html", tmp_path / "r.pdf", tmp_path / "p"
    as_user = pdf.chromium_command(Path("/usr/bin/chromium"), source, target, profile, as_root=False)
    as_root = pdf.chromium_command(Path("/usr/bin/chromium"), source, target, profile, as_root=True)
    assert "--no-sandbox" not in as_user
    assert "--no-sandbox" in as_root
    for argv in (as_user, as_root):
        assert "--headless" in argv
        assert "--proxy-server=127.0.0.1:9" in argv, "every request goes to a dead proxy"
        assert "--disable-background-networking" in argv
        assert f"--print-to-pdf={target}" in argv
        assert argv[-1] == source.resolve().as_uri()


def test_missing_chromium_is_named(tmp_path: Path) -> None:
    source = tmp_path / "report.html"
    source.write_text("<!DOCTYPE html><title>x</title>")
    with pytest.raises(pdf.PdfUnavailable, match=r"Chromium \(/nowhere/chromium\) is not installed"):
        pdf.render_pdf(source, tmp_path / "report.pdf", binary=Path("/nowhere/chromium"))


def _fake_chromium(tmp_path: Path, script: str) -> Path:
    binary = tmp_path / "fake-chromium"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)
    return binary


def test_a_failing_chromium_is_named_and_leaves_no_pdf(tmp_path: Path) -> None:
    source = tmp_path / "report.html"
    source.write_text("<!DOCTYPE html><title>x</title>")
    binary = _fake_chromium(
        tmp_path, "echo 'Failed to connect to the bus: dbus' >&2\necho 'boom: no GPU' >&2\nexit 3\n"
    )
    with pytest.raises(pdf.PdfRenderError, match=r"\(exit 3\): boom: no GPU$"):
        pdf.render_pdf(source, tmp_path / "report.pdf", binary=binary)
    # exit 0 but not a PDF (a wrapper that printed an error page's text): refused, removed
    target = tmp_path / "report.pdf"
    liar = _fake_chromium(tmp_path, f"echo 'not a pdf' > {target}\nexit 0\n")
    with pytest.raises(pdf.PdfRenderError, match=r"did not print report\.html to a PDF"):
        pdf.render_pdf(source, target, binary=liar)
    assert not target.exists()


def test_chromium_gets_no_task_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_THING", "postgresql://u:hunter2@db/x")
    source, target, seen = tmp_path / "report.html", tmp_path / "report.pdf", tmp_path / "env.txt"
    source.write_text("<!DOCTYPE html><title>x</title>")
    binary = _fake_chromium(tmp_path, f"env > {seen}\nprintf '%%PDF-1.4 fake' > {target}\n")
    pdf.render_pdf(source, target, binary=binary)
    environment = seen.read_text()
    assert "hunter2" not in environment
    assert "HOME=" in environment
    assert str(tmp_path) not in next(line for line in environment.splitlines() if line.startswith("HOME="))


# --- in the pack ----------------------------------------------------------------------------------


def test_a_pack_built_without_chromium_builds_and_says_why(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path / "pack", chromium=Path("/nowhere/chromium"))
    assert not result.report_pdf
    assert (
        result.report_pdf_absent == "Chromium (/nowhere/chromium) is not installed where the pack was built"
    )
    assert not (result.path / "report.pdf").exists()
    assert (result.path / "report.html").exists()
    summary = _summary(result.path)
    assert summary["report_pdf"] is None
    assert summary["report_pdf_absent"] == result.report_pdf_absent
    checked = verify_pack(result.path, KEYS)
    assert checked.ok, str(checked)
    assert checked.complete, str(checked)


def test_a_pack_built_with_a_failing_chromium_builds_and_names_the_failure(tmp_path: Path) -> None:
    binary = _fake_chromium(tmp_path, "echo 'crashed' >&2\nexit 1\n")
    result = _build(_mixed_store(), tmp_path / "pack", chromium=binary)
    assert not result.report_pdf
    assert "crashed" in _summary(result.path)["report_pdf_absent"]
    assert verify_pack(result.path, KEYS).ok


def test_a_pack_without_a_report_has_no_pdf_entry(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path / "pack", report=False)
    assert not result.report_pdf
    assert result.report_pdf_absent is None
    assert "report_pdf" not in _summary(result.path)


def test_the_pdfs_dates_are_pinned_to_the_same_length() -> None:
    printed = b"%PDF-1.4\n<</CreationDate (D:20261207052045+00'00')\n/ModDate (D:20261207052045+00'00')>>"
    pinned = pdf.pin_dates(printed, T0 + timedelta(days=30))
    assert (
        pinned == b"%PDF-1.4\n<</CreationDate (D:20261201000000+00'00')\n/ModDate (D:20261201000000+00'00')>>"
    )
    assert len(pinned) == len(printed)
    odd = b"%PDF-1.4\n<</CreationDate (D:20261207052045Z)>>"
    assert pdf.pin_dates(odd, T0) == odd


@needs_chromium
def test_the_pdf_is_in_the_manifest_and_verified_like_any_file(tmp_path: Path) -> None:
    store = _mixed_store()
    result = _build(store, tmp_path / "pack")
    pack = result.path
    again = _build(store, tmp_path / "again")
    assert again.files["report.pdf"] == result.files["report.pdf"], "the same records, the same PDF"
    assert again.manifest_sha256 == result.manifest_sha256, "a rebuilt pack keeps its manifest (and pack id)"
    assert result.report_pdf
    assert result.report_pdf_absent is None
    assert _summary(pack)["report_pdf"] == "report.pdf"
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["files"]["report.pdf"] == result.files["report.pdf"]
    assert f"{result.files['report.pdf']}  report.pdf\n" in (pack / "SHA256SUMS").read_text()
    assert verify_pack(pack, KEYS).ok
    body = bytearray((pack / "report.pdf").read_bytes())
    body[len(body) // 2] ^= 0x01  # one bit of one byte
    (pack / "report.pdf").write_bytes(bytes(body))
    checked = verify_pack(pack, KEYS)
    assert not checked.ok
    assert checked.problems == ["manifest mismatch: report.pdf (its sha256 is not the manifest's: altered)"]
    (pack / "report.pdf").unlink()
    assert verify_pack(pack, KEYS).problems == [
        "manifest mismatch: report.pdf is listed but missing from the pack"
    ]


# --- what a reader sees ---------------------------------------------------------------------------


@needs_chromium
def test_the_report_renders_and_prints_readably(tmp_path: Path) -> None:
    import pypdfium2
    from PIL import Image

    source = tmp_path / "report.html"
    source.write_text(
        report.render(
            mixed_month(comment=ATTACK),
            tenant="acme",
            start=START,
            end=END,
            sla=SLA,
            display_name="ACME Corp",
        ),
        encoding="utf-8",
    )
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            str(chromium.BINARY),
            "--headless",
            *(["--no-sandbox"] if os.geteuid() == 0 else []),
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1100,1400",
            source.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as image:
        assert image.size == (1100, 1400)
        _not_blank(image)

    printed = pdf.render_pdf(source, tmp_path / "report.pdf")
    document = pypdfium2.PdfDocument(printed)
    try:
        assert len(document) >= 1
        first = document[0]
        width, height = first.get_size()
        assert (round(width), round(height)) == (595, 842), "A4 (the page's @page rule)"
        words = " ".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
        page_one = first.get_textpage().get_text_range()
        bitmap = first.render(scale=1.0).to_pil()
    finally:
        document.close()
    assert "Evidence report: ACME Corp" in page_one
    assert "period from 2026-11-01 00:00 UTC up to 2026-12-01 00:00 UTC" in page_one.replace(
        "\r\n", " "
    ).replace("\n", " ")
    assert "Page 1 of" in words, "every printed page names itself"
    assert "isolate host" in words, "the runs' approvals are printed, not only the summary"
    assert "bob" in words
    assert "document.title='pwned'" in words, "the hostile comment is printed as text"
    _not_blank(bitmap)


def test_the_footer_cannot_end_its_css_string() -> None:
    css = report.print_css('Evil"};body{display:none}</style><script>', START, END)
    label = css.split('content:"', 1)[1].split('"', 1)[0]
    assert label.startswith("Evidence report: Evil")
    assert not any(c in label for c in "\"'\\<>{};")
    assert css.count('"') == 6


# --- seal before build ----------------------------------------------------------------------------


def _quiet_month_end() -> MemoryStore:
    """November's last acme record after the last seal; the next seal has not run yet."""
    store = _mixed_store()
    store.checkpoint_list.pop()
    store.commitments = [c for c in store.commitments if c.checkpoint_seq <= len(store.checkpoint_list)]
    store.log.records = store.log.records[:-2]
    store.clock = T0 + timedelta(days=29, hours=23)
    store.append("acme")
    store.clock = T0 + timedelta(days=31, hours=4)  # the monthly run: the 1st, 04:00
    return store


def test_a_monthly_pack_of_an_unsealed_month_end_is_sealed_first(tmp_path: Path) -> None:
    store = _quiet_month_end()
    with pytest.raises(EvidencePackError, match="1 records of the period are not sealed yet"):
        _build(store, tmp_path / "refused", report=False)
    calls: list[int] = []

    def seal() -> None:
        calls.append(len(store.checkpoint_list))
        store.seal()

    result = _build(store, tmp_path / "pack", report=False, seal=seal)
    assert calls == [len(store.checkpoint_list) - 1], "sealed exactly once, before the build"
    assert result.sealed_first
    assert result.complete, result.warnings
    last = store.log.records[-1]
    assert last.tenant == "acme"
    seqs = [json.loads(line)["seq"] for line in (result.path / "records.jsonl").read_text().splitlines()]
    assert last.seq in seqs, "the month's last record is in the pack"
    assert verify_pack(result.path, [SIGNER.public_key]).complete


def test_a_sealed_month_end_is_not_sealed_again(tmp_path: Path) -> None:
    def seal() -> None:
        raise AssertionError("sealed although the period's end is sealed")

    result = _build(_mixed_store(), tmp_path / "pack", report=False, seal=seal)
    assert not result.sealed_first
    assert result.complete


# --- a busy period: the printed copy details the first runs -----------------------------------------


def test_the_printed_copy_of_a_busy_period_details_the_first_runs() -> None:
    html = report.render(
        mixed_month(), tenant="acme", start=START, end=END, sla=SLA, display_name="ACME Corp", detail_limit=2
    )
    assert html.count('<section class="run"') == 2
    assert "This printed copy details the first 2 of the 3 runs" in html
    assert "<b>3</b> workflow runs touched this tenant" in html, "the summary counts every run"
    whole = report.render(
        mixed_month(), tenant="acme", start=START, end=END, sla=SLA, display_name="ACME Corp", detail_limit=3
    )
    assert whole.count('<section class="run"') == 3
    assert "printed copy" not in whole


def _busy_store(runs: int) -> MemoryStore:
    store = MemoryStore()
    store.append("acme")
    store.seal()
    store.clock = T0 + timedelta(hours=1)
    for n in range(runs):
        store.log.append(
            {
                "kind": "run.triggered",
                "actor": "alice",
                "tenant": "acme",
                "domain": "soc",
                "dag_id": "soc_contain_host",
                "run_id": f"r{n}",
                "details": {"how": "ui"},
            },
            at=store.tick(),
        )
    store.seal()
    store.clock = T0 + timedelta(days=31)
    store.append("acme")
    store.seal()
    return store


def test_a_busy_periods_pdf_is_printed_from_a_shortened_copy_outside_the_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.evidence import pack as pack_module

    monkeypatch.setattr(pack_module, "PDF_DETAIL_RUNS", 2)
    seen = tmp_path / "printed.html"
    # a stand-in printer: keeps what it was asked to print, writes a PDF header
    script = (
        'for a in "$@"; do case "$a" in --print-to-pdf=*) out="${a#--print-to-pdf=}";; esac; done\n'
        'src="${@: -1}"\n'
        f'cp "${{src#file://}}" {seen}\n'
        "printf '%%PDF-1.4 stand-in' > \"$out\"\n"
    )
    binary = tmp_path / "printer"
    binary.write_text("#!/bin/bash\n" + script)
    binary.chmod(0o755)
    result = _build(_busy_store(3), tmp_path / "pack", chromium=binary)
    assert result.report_pdf
    printed = seen.read_text()
    assert "This printed copy details the first 2 of the 3 runs" in printed
    assert printed.count('<section class="run"') == 2
    whole = (result.path / "report.html").read_text()
    assert whole.count('<section class="run"') == 3
    assert "printed copy" not in whole
    assert _summary(result.path)["report_pdf_details_runs"] == 2
    assert sorted(p.name for p in result.path.iterdir() if p.suffix == ".html") == ["report.html"]
    assert verify_pack(result.path, KEYS).ok
