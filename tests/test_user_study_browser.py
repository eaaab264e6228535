"""The rating form in a real headless browser: answer every question, press save, read the CSV that
the browser downloaded, score it with the key.

Needs Debian's ``chromium`` and ``chromium-driver`` (apt) and the ``selenium`` package; without
them the test is skipped and says which is missing.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_user_study import STRONG, synthetic_study

from gradcam_lib.experiments import user_study as kit
from gradcam_lib.metrics import agreement as ag
from gradcam_lib.report import user_study as rf

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    BROWSER is None or DRIVER is None,
    reason=f"headless browser test needs chromium and chromedriver (apt-get install chromium chromium-driver); "
           f"found chromium={BROWSER}, chromedriver={DRIVER}",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1200,1600"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver, downloads
    finally:
        driver.quit()


def wait_for_csv(folder: Path, timeout: float = 10.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sorted(folder.glob("*.csv"))
        if done and not list(folder.glob("*.crdownload")):
            return done
        time.sleep(0.1)
    return []


def test_a_rater_answers_every_question_and_saves_a_csv(browser, tmp_path):
    driver, downloads = browser
    items, key = synthetic_study(n_images=3)
    form_path = rf.write_form(tmp_path, rf.render_form(items, key))
    driver.get(form_path.as_uri())

    # every picture decoded from the page itself; nothing fetched
    assert driver.execute_script(
        "return Array.from(document.images).every(i => i.src.startsWith('data:') && i.naturalWidth > 0)")
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0

    # saving before answering is refused, and nothing is downloaded
    rater = 'rater, "seven"'  # a comma and quotes: the CSV must quote it
    driver.find_element(By.ID, "rater-id").send_keys(rater)
    driver.find_element(By.ID, "save").click()
    assert "answer every question" in driver.find_element(By.ID, "status").text
    assert not wait_for_csv(downloads, timeout=0.5)

    chosen = [rf.ANSWERS[k % len(rf.ANSWERS)] for k in range(len(key))]
    for question_id, answer in zip(key["question_id"], chosen, strict=True):
        fieldset = driver.find_element(By.ID, question_id)
        fieldset.find_element(By.CSS_SELECTOR, f'input[value="{answer}"]').click()
    assert driver.find_element(By.ID, "progress").text == f"{len(key)} / {len(key)} answered"
    driver.find_element(By.ID, "save").click()

    files = wait_for_csv(downloads)
    assert [f.name for f in files] == [f"ratings_{key['study_id'].iloc[0]}_rater___seven_.csv"]
    ratings = kit.read_ratings(files)
    assert list(ratings.columns) == list(ag.RATINGS_COLUMNS)
    assert (ratings["rater_id"] == rater).all() and (ratings["study_id"] == key["study_id"].iloc[0]).all()
    assert ratings["question_id"].tolist() == key["question_id"].tolist()
    assert ratings["answer"].tolist() == chosen
    # the fallback box shows the same text
    assert driver.find_element(By.ID, "csv-output").get_attribute("value") == files[0].read_text()

    scores = ag.score_ratings(ratings, key)
    strong_on_a = np.where(key["model_a"] == STRONG, 1, -1)
    assert scores["score"].tolist() == (np.asarray(chosen) * strong_on_a).tolist()


def test_a_rater_id_that_a_spreadsheet_would_run_is_saved_as_text(browser, tmp_path):
    """OWASP's CSV-injection rule in the saved file: a rater id starting with = (or +, -, @) gets a
    leading single quote; the answers -2 and -1 stay numbers."""
    driver, downloads = browser
    own = tmp_path / "downloads"  # a folder of this test's own, so the other test's file is not read
    own.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(own)})
    try:
        items, key = synthetic_study(n_images=2)
        form_path = rf.write_form(tmp_path, rf.render_form(items, key))
        driver.get(form_path.as_uri())
        rater = '=HYPERLINK("http://x","y")'
        driver.find_element(By.ID, "rater-id").send_keys(rater)
        chosen = [(-2, -1, 2, 0)[k % 4] for k in range(len(key))]
        for question_id, answer in zip(key["question_id"], chosen, strict=True):
            driver.find_element(By.ID, question_id).find_element(By.CSS_SELECTOR, f'input[value="{answer}"]').click()
        driver.find_element(By.ID, "save").click()
        files = wait_for_csv(own)
        assert [f.name for f in files] == [f"ratings_{key['study_id'].iloc[0]}__HYPERLINK__http___x___y__.csv"]
        lines = files[0].read_text().splitlines()
        assert lines[1] == f'{key["study_id"].iloc[0]},"\'=HYPERLINK(""http://x"",""y"")",{key["question_id"].iloc[0]},-2'
        ratings = kit.read_ratings(files)
        assert (ratings["rater_id"] == "'" + rater).all()
        assert ratings["answer"].tolist() == chosen
        assert ag.score_ratings(ratings, key)["answer"].tolist() == chosen
    finally:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
