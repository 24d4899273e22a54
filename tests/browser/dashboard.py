"""Browser test of the dashboard (`GET /`), run by .ci/run with Debian's Chromium, headless.

Usage: python3 tests/browser/dashboard.py NETREV_BINARY [SCREENSHOT_DIR]

Starts `netrev serve` on a small known history (imported, so the start-up recompute has
cohorts), opens the page and checks: the Refund Rate column toggles off and on (and the choice
survives a reload); grouped by source, the numbers shown equal the API's; a source above the
refund-rate threshold is marked for review; a refund posted now appears without reloading;
the Cohort LTV chart draws; in Settings, a link and a refund-only webhook are created, the link
is followed to an offer page, a refund is posted and its delivery is listed, the postback URL
builder shows the network's macro. Screenshots are saved as artifacts (default
target/browser/).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class Receiver(BaseHTTPRequestHandler):
    """The offer page a link sends visitors to (GET) and a CRM's webhook endpoint (POST)."""

    received = []

    def do_GET(self):  # noqa: N802 - the standard library's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>offer</title><p>the offer")

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


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
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    rport = receiver.server_address[1]
    server = subprocess.Popen([BIN, "serve", "--data", data, "--listen", "127.0.0.1:0", "--webhooks-allow-private"],
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

        # Settings → Links: create a link.
        driver.find_element(By.ID, "settings-title").location_once_scrolled_into_view  # noqa: B018
        driver.find_element(By.ID, "link-slug").send_keys("spring")
        driver.find_element(By.ID, "link-url").send_keys(f"http://127.0.0.1:{rport}/offer?clickid={{cid}}&s={{sub1}}")
        driver.find_element(By.ID, "link-source").send_keys("fb")
        driver.find_element(By.ID, "link-campaign").send_keys("spring")
        driver.find_element(By.ID, "link-cost").send_keys("0.30")
        driver.find_element(By.ID, "link-save").click()
        link_row = lambda: driver.find_element(By.CSS_SELECTOR, "#links tr[data-slug=spring]")  # noqa: E731
        wait("the link listed", link_row)
        assert link_row().find_element(By.CSS_SELECTOR, ".tracking-url").text == base + "/r/spring"

        # Settings → Webhooks: a refund-only endpoint; its secret is shown once.
        driver.find_element(By.ID, "hook-url").send_keys(f"http://127.0.0.1:{rport}/hook")
        assert driver.find_element(By.ID, "hook-refund").is_selected()
        assert not driver.find_element(By.ID, "hook-conversion").is_selected()
        driver.find_element(By.CSS_SELECTOR, "#hook-form button[type=submit]").click()
        wait("the secret", lambda: driver.find_element(By.ID, "hook-secret-value").text.startswith("whsec_"))
        hook_row = lambda: driver.find_element(By.CSS_SELECTOR, "#hooks tbody tr")  # noqa: E731
        wait("the endpoint listed", hook_row)
        assert hook_row().find_element(By.CSS_SELECTOR, ".event-refund").is_selected()
        assert not hook_row().find_element(By.CSS_SELECTOR, ".event-conversion").is_selected()
        assert get(base, "/api/webhooks")["webhooks"][0]["events"] == ["refund"]
        driver.save_screenshot(os.path.join(SHOTS, "settings.png"))

        # Follow the link: the offer page gets the click ID; a sale and its refund follow.
        driver.get(base + "/r/spring?sub1=a%26b")
        wait("the offer page", lambda: "/offer?" in driver.current_url)
        offer = urllib.parse.parse_qs(urllib.parse.urlparse(driver.current_url).query)
        cid = offer["clickid"][0]
        assert offer["s"] == ["a&b"], offer
        for path in [f"/api/conversion?cid={cid}&amount=30&txid=L1",
                     f"/api/conversion/refund?cid={cid}&amount=30&txid=LR1&ref=L1"]:
            urllib.request.urlopen(base + path, timeout=10).read()
        wait("the refund delivered", lambda: any(m["type"] == "refund.created" for m in Receiver.received))
        assert [m["type"] for m in Receiver.received] == ["refund.created"], Receiver.received
        assert Receiver.received[0]["data"]["cid"] == cid

        # The delivery is listed in Settings.
        driver.get(base + "/")
        wait("the endpoint listed again", hook_row)

        def delivered():
            hook_row().find_element(By.CSS_SELECTOR, "button.deliveries").click()
            time.sleep(0.3)
            return [tr for tr in driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")
                    if tr.find_element(By.CSS_SELECTOR, ".type").text == "refund.created"
                    and tr.find_element(By.CSS_SELECTOR, ".delivery-status").text == "delivered"]
        wait("the delivery listed", delivered)

        # Edit the link, then disable it: visits are 410.
        link_row().find_element(By.CSS_SELECTOR, "button.edit").click()
        campaign = driver.find_element(By.ID, "link-campaign")
        campaign.clear()
        campaign.send_keys("autumn")
        driver.find_element(By.ID, "link-save").click()
        wait("the edited link", lambda: "autumn" in link_row().text)
        link_row().find_element(By.CSS_SELECTOR, "button.toggle").click()
        wait("the disabled link", lambda: link_row().find_element(By.CSS_SELECTOR, ".link-state").text == "Disabled")
        try:
            urllib.request.urlopen(base + "/r/spring", timeout=10)
            raise AssertionError("a disabled link redirected")
        except urllib.error.HTTPError as e:
            assert e.code == 410, e.code

        # The postback URL builder.
        Select(driver.find_element(By.ID, "pb-network")).select_by_value("digistore24")
        conversion = driver.find_element(By.ID, "pb-conversion").text
        assert conversion == base + "/api/conversion?cid={cid}&amount={amount}&txid={txid}", conversion
        driver.find_element(By.ID, "pb-token").send_keys("s3cret")
        assert driver.find_element(By.ID, "pb-refund").text.endswith("&token=s3cret")
        assert driver.find_element(By.ID, "pb-offer").text == "&cid={cid}"
        print(f"dashboard browser test passed; screenshots in {SHOTS}")
    finally:
        if driver:
            driver.quit()
        server.terminate()
        server.wait()
        receiver.shutdown()


if __name__ == "__main__":
    main()
