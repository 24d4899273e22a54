"""Browser test of the dashboard (`GET /`), run by .ci/run with Debian's Chromium, headless.

Usage: python3 tests/browser/dashboard.py NETREV_BINARY [SCREENSHOT_DIR]

Starts `netrev serve` on a small known history (imported, so the start-up recompute has
cohorts), opens the page and checks: the Refund Rate column toggles off and on (and the choice
survives a reload); grouped by source, the numbers shown equal the API's; a source above the
refund-rate threshold is marked for review; a refund posted now appears without reloading;
the Cohort LTV chart draws. Screenshots are saved as artifacts (default target/browser/).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

BIN = os.path.abspath(sys.argv[1])
SHOTS = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "target/browser")


def write_history(root):
    """Two sources: fb (4 clicks, 3 sales, one refunded: refund rate 33.33%) and gg (2 clicks,
    2 sales, none refunded), over the last days; returns the CSV paths by table."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ts = lambda days, hours=0: (now - timedelta(days=days, hours=hours)).isoformat().replace("+00:00", "Z")  # noqa: E731
    files = {
        "clicks": ["cid,vid,ts,source,campaign,country,device,cost",
                   f"f1,v1,{ts(5)},fb,spring,US,mobile,0.50",
                   f"f2,v2,{ts(5)},fb,spring,DE,desktop,0.50",
                   f"f3,v3,{ts(3)},fb,summer,US,mobile,0.50",
                   f"f4,v4,{ts(2)},fb,summer,US,mobile,0.50",
                   f"g1,v5,{ts(4)},gg,brand,FR,desktop,1.25",
                   f"g2,v6,{ts(1)},gg,brand,FR,mobile,1.25"],
        "conversions": ["cid,ts,amount,txid",
                        f"f1,{ts(5, -1)},49.99,T1",
                        f"f2,{ts(5, -2)},19.99,T2",
                        f"f3,{ts(3, -1)},99.00,T3",
                        f"g1,{ts(4, -1)},25.00,T4",
                        f"g2,{ts(1, -1)},25.00,T5"],
        "refunds": ["cid,ts,amount,type,txid,ref",
                    f"f1,{ts(2)},49.99,chargeback,R1,T1"],
    }
    paths = {}
    for table, lines in files.items():
        paths[table] = os.path.join(root, f"{table}.csv")
        with open(paths[table], "w") as f:
            f.write("\n".join(lines) + "\n")
    return paths


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


def wait(what, fn, timeout=20):
    deadline = time.time() + timeout
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # noqa: BLE001 - retried until the deadline
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def money(s):
    """The page's formatting of a money string (values here are below 1,000, exact cents)."""
    whole, _, frac = s.partition(".")
    return whole + "." + (frac + "00")[:2]


def main():
    work = tempfile.mkdtemp(prefix="netrev-browser-")
    data = os.path.join(work, "data")
    for table, path in write_history(work).items():
        subprocess.run([BIN, "import", "--data", data, "--table", table, path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([BIN, "serve", "--data", data, "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, env=dict(os.environ, NETREV_LOG="warn"), text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-background-networking", "--window-size=1400,1800"]:
        options.add_argument(arg)
    driver = None
    try:
        base = re.search(r"(http://\S+)", server.stdout.readline()).group(1)
        wait("the live stats", lambda: get(base, "/api/stats?group_by=source")["rows"])
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.get(base + "/")
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#stats tbody tr")  # noqa: E731
        headers = lambda: [h.text.replace(" ▲", "").replace(" ▼", "") for h in  # noqa: E731
                           driver.find_elements(By.CSS_SELECTOR, "#stats thead th")]
        wait("stats rows", lambda: len(rows()) == 2)

        # The Refund Rate column toggles off and on, and the choice is remembered.
        assert "Refund Rate" in headers(), headers()
        driver.find_element(By.ID, "col-refund_rate").click()
        wait("Refund Rate hidden", lambda: "Refund Rate" not in headers())
        driver.refresh()
        wait("stats rows after reload", lambda: len(rows()) == 2)
        assert "Refund Rate" not in headers(), "the column choice is kept across a reload"
        driver.find_element(By.ID, "col-refund_rate").click()
        wait("Refund Rate shown", lambda: "Refund Rate" in headers())

        # Grouped by source, the page shows the API's numbers.
        Select(driver.find_element(By.ID, "group-by")).select_by_value("source")
        wait("source rows", lambda: len(rows()) == 2)

        def shown():
            out = {}
            for tr in rows():
                cells = {td.get_attribute("data-col"): td.text for td in tr.find_elements(By.TAG_NAME, "td")}
                out[cells["source"].split("review")[0].strip()] = (cells, "review" in tr.get_attribute("class"))
            return out

        api = {r["source"]: r for r in get(base, "/api/stats?group_by=source")["rows"]}
        page = shown()
        for source, row in api.items():
            cells, _ = page[source]
            assert cells["clicks"] == str(row["clicks"]), (source, cells, row)
            assert cells["gross_revenue"] == money(row["gross_revenue"]), (source, cells, row)
            assert cells["refund_amount"] == money(row["refund_amount"]), (source, cells, row)
            assert cells["net_revenue"] == money(row["net_revenue"]), (source, cells, row)
            rate = row["refund_rate"]
            assert cells["refund_rate"] == ("–" if rate is None else f"{rate:.2f}%"), (source, cells, row)
        assert page["fb"][0]["refund_rate"] == "33.33%" and page["fb"][1], "fb is marked for review"
        assert not page["gg"][1], "gg is not"
        total = driver.find_element(By.CSS_SELECTOR, "#stats tfoot td[data-col=gross_revenue]").text
        assert total == "218.98", total

        # A refund posted now appears without a reload (auto-refresh).
        urllib.request.urlopen(base + "/api/conversion/refund?cid=g1&amount=25&txid=R9&ref=T4", timeout=10).read()
        wait("the new refund on the page", lambda: shown()["gg"][0]["refund_amount"] == "25.00", timeout=15)
        assert shown()["gg"][0]["refund_rate"] == "50.00%"

        # The Cohort LTV chart.
        wait("the cohort chart", lambda: driver.find_elements(By.CSS_SELECTOR, "#chart canvas"))
        cohort_rows = driver.find_elements(By.CSS_SELECTOR, "#cohort-table tbody tr")
        assert cohort_rows, "cohort rows"
        os.makedirs(SHOTS, exist_ok=True)
        driver.find_element(By.ID, "cohorts-title").location_once_scrolled_into_view  # noqa: B018
        driver.find_element(By.ID, "chart").screenshot(os.path.join(SHOTS, "cohort-ltv.png"))
        driver.save_screenshot(os.path.join(SHOTS, "dashboard.png"))

        # Visitor lookup.
        driver.find_element(By.ID, "vid").send_keys("v1")
        driver.find_element(By.CSS_SELECTOR, "#visitor-form button").click()
        wait("the visitor profile", lambda: "Refund history" in driver.find_element(By.ID, "visitor").text)
        print(f"dashboard browser test passed; screenshots in {SHOTS}")
    finally:
        if driver:
            driver.quit()
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
