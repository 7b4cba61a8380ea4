# Sourced by the contrib scripts: installs the Debian packages they need.
#
# ensure_commands CMD:PACKAGE... installs each PACKAGE whose CMD is missing,
# with apt-get when running as root, and otherwise says what to install.

ensure_commands() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "missing packages: ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
        return 1
    fi
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The packages the test suite runs: borg, openssl, setsid and prlimit,
# fusermount3, age, ip (network namespaces).
TEST_COMMANDS=(borg:borgbackup openssl:openssl setsid:util-linux fusermount3:fuse3 age:age ip:iproute2)
