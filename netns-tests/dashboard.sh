# netns-tests/dashboard.sh: the dashboard's network page with the overlay on, in a real browser —
# Debian's chromium, headless, driven over WebDriver (chromedriver, from curl) inside the host's
# namespace, through `river ui` as the overlay host's admin. Sourced by run.sh after overlay.sh.

have_browser() { [[ -x /usr/bin/chromium ]] && command -v chromedriver >/dev/null; }

# wd METHOD PATH [JSON]: one WebDriver call to the chromedriver in the host's namespace.
wd() {
  if [[ $# -ge 3 ]]; then
    in_ns "$H" curl -s --max-time 60 -X "$1" -H 'Content-Type: application/json' -d "$3" "http://127.0.0.1:9515$2"
  else
    in_ns "$H" curl -s --max-time 60 -X "$1" "http://127.0.0.1:9515$2"
  fi
}

# js SCRIPT: runs SCRIPT (a function body) in the page; its value (a string as it is, else JSON).
js() {
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"script": sys.argv[1], "args": []}))' "$1")
  wd POST "/session/$WD/execute/sync" "$body" \
    | python3 -c 'import json,sys; v=json.load(sys.stdin)["value"]; print(v if isinstance(v, str) else json.dumps(v))'
}

# page_has CSS TEXT: the first element CSS selects contains TEXT.
page_has() { [[ $(js "return (document.querySelector(\"$1\") || {}).textContent || ''") == *"$2"* ]]; }

reserved() { in_ns "$H" env RIVER_CONFIG_DIR="$T/ohost/admin" timeout 60 "$RIVER" ip list | grep -q "^$1 "; }

test_overlay_dashboard() {
  if ! have_engine || ! have_browser; then
    echo "    SKIP: needs dockerd and river-test/busybox:1, chromium and chromedriver"
    [[ -z ${RIVER_REQUIRE_DOCKER:-} && -z ${RIVER_REQUIRE_BROWSER:-} ]]
    return
  fi
  overlay_up
  wait_for "every member's overlay built, three peers each" 60 overlay_healthy 3 host oa ob oc
  nsenter --net=/run/netns/"$H" chromedriver --port=9515 >>"$T/chromedriver.log" 2>&1 &
  track chromedriver $!
  nsenter --net=/run/netns/"$H" env RIVER_CONFIG_DIR="$T/ohost/admin" "$RIVER" ui --no-open -p 18190 \
    >"$T/ui.out" 2>>"$T/ui.log" &
  track ui $!
  wait_for "river ui's link" 30 test -s "$T/ui.out"
  wait_for "chromedriver" 30 bash -c "nsenter --net=/run/netns/$H curl -s http://127.0.0.1:9515/status | grep -q '\"ready\": *true'"
  WD=$(wd POST /session '{"capabilities":{"alwaysMatch":{"browserName":"chrome","goog:chromeOptions":{"binary":"/usr/bin/chromium","args":["--headless=new","--no-sandbox","--disable-gpu","--disable-dev-shm-usage","--window-size=1280,900"]}}}}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"]["sessionId"])')
  [[ -n $WD ]] || { echo "    no browser session"; return 1; }

  echo "    the network page shows the overlay's members"
  wd POST "/session/$WD/url" "{\"url\":\"$(head -n1 "$T/ui.out")\"}" >/dev/null
  wait_for "the page is live" 30 page_has "#live" "live"
  wd POST "/session/$WD/url" '{"url":"http://127.0.0.1:18190/#/network"}' >/dev/null
  wait_for "the overlay's members on the page" 30 page_has "#overlay" "oa"
  page_has "#overlay" "10.128." || { echo "    the page shows: $(js "return document.getElementById('view').textContent")"; return 1; }

  echo "    an address reserved on the page is the cluster's, and released there"
  js "document.getElementById('ip-node').value = 'ob'; document.getElementById('ip-reserve').click(); return true" >/dev/null
  wait_for "the reservation's token on the page" 30 page_has "#secret-token" "rvip1."
  local rip
  rip=$(js "return document.getElementById('secret').textContent.match(/Reserved (\\S+) on ob/)[1]")
  [[ $rip == 10.128.* ]] || { echo "    reserved: $rip"; return 1; }
  reserved "$rip" || { echo "    river ip list does not have $rip"; return 1; }
  wait_for "the reservation listed on the page" 30 page_has "tr[data-ip='$rip']" "ob"
  js "document.querySelector(\"button[data-release='$rip']\").click(); return true" >/dev/null
  wait_for "the reservation released" 30 bash -c "! nsenter --net=/run/netns/$H env RIVER_CONFIG_DIR=$T/ohost/admin $RIVER ip list | grep -q '^$rip '"
  wd DELETE "/session/$WD" >/dev/null
}
