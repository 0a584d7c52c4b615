#!/usr/bin/env bash
# The one test command (README "Run the tests"; .ci/run calls exactly this).
# Installs what the suite needs, then runs pytest; extra arguments go to pytest.
#   - Debian packages, when missing: prometheus (promtool + the Prometheus server for the
#     end-to-end tests), prometheus-alertmanager (amtool checks the Alertmanager
#     config), docker-compose (to validate the compose file), systemd
#     (systemd-analyze verifies the unit file), openssl and curl (TLS client tests),
#     victoria-metrics (vmagent, VictoriaMetrics, vmalert, vmauth: the many-sites tests)
#     and chromium (the landing page in a real headless browser);
#   - a virtual environment in .venv with the package and its test extras (PEP 668 safe).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v vmagent >/dev/null 2>&1 || need_apt+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "tests/run.sh: installing Debian packages: ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
