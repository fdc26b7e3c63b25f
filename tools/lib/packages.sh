# Sourced by tools/test and tools/demo: installs the Debian packages the build
# needs (apt-get, as root), or says what to install.
#   need_packages <package>...   (a package whose check passes is skipped)
need_packages() {
  local want=() p
  for p in "$@"; do
    case $p in
      gcc) command -v gcc >/dev/null || want+=(gcc) ;;
      iproute2) command -v ip >/dev/null || want+=(iproute2) ;;
      *) dpkg -s "$p" >/dev/null 2>&1 || want+=("$p") ;;
    esac
  done
  ((${#want[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "$(basename "$0"): missing Debian packages ${want[*]}; install them (sudo apt-get install ${want[*]}) or run as root" >&2
    exit 1
  fi
  echo "== installing ${want[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
}
