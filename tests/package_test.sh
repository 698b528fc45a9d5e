#!/usr/bin/env bash
# The Debian package, end to end. scripts/package builds it in its own build folder (kept between
# runs, so a run rebuilds only what changed); dpkg installs it into a scratch root with an admin
# directory of its own, so the machine's dpkg database, /etc and /usr stay as they were. The test
# checks the package's control data and contents, what dpkg recorded, the installed files, and runs
# the installed executables; the installed daemon finds its catalogs at /usr/share/telemetryd in a
# private mount namespace where the scratch root's /usr/share is laid over the machine's. Then it
# removes and purges the package. Runs as root.
#
# Usage: package_test.sh SOURCE_DIR PACKAGE_BUILD_DIR VERSION DEV_TELEMETRYD [cmake options...]
#   DEV_TELEMETRYD is the development build's daemon: it reads the same catalogs from the source
#   tree, so the installed daemon must count as many metrics. The cmake options go to scripts/package.

# shellcheck disable=SC2016  # ${Status} & co. are dpkg-query's formats, $1 the inner shell's
set -euo pipefail

source_dir=$1
build_dir=$2
version=$3
dev_telemetryd=$4
shift 4

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# expect_equal WHAT ACTUAL EXPECTED
expect_equal() {
  [[ $2 == "$3" ]] || fail "$1: got '$2', want '$3'"
}
# expect_contains WHAT TEXT NEEDLE
expect_contains() {
  [[ $2 == *"$3"* ]] || fail "$1: '$3' not found in:"$'\n'"$2"
}

[[ $(id -u) -eq 0 ]] || fail "needs root (dpkg --root, mount namespaces)"
for tool in dpkg dpkg-deb dpkg-query unshare mount readelf groff gzip; do
  command -v "$tool" >/dev/null || fail "$tool is missing: scripts/install-deps --test installs it"
done

# What must not change on this machine.
host_paths=(/usr/bin/telemetryd /usr/bin/telemetry-send /etc/telemetryd /usr/share/telemetryd
  /lib/systemd/system/telemetryd.service /usr/lib/sysctl.d/60-telemetryd.conf
  /etc/systemd/system/multi-user.target.wants/telemetryd.service
  /etc/systemd/system/telemetryd.service
  /var/lib/systemd/deb-systemd-helper-enabled/telemetryd.service.dsh-also
  /var/lib/systemd/deb-systemd-helper-masked/telemetryd.service)
host_state() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' telemetryd 2>&1 || true
  for p in "${host_paths[@]}"; do
    stat -c '%n %Y' "$p" 2>/dev/null || echo "$p absent"
  done
}
host_before=$(host_state)

echo "== building the package"
deb=$("$source_dir/scripts/package" "$build_dir" "$@")
[[ -f $deb ]] || fail "scripts/package printed '$deb', not a file"
echo "$deb"

echo "== control data (dpkg-deb -I)"
arch=$(dpkg --print-architecture)
expect_equal "file name" "$(basename "$deb")" "telemetryd_${version}-1_${arch}.deb"
expect_equal Package "$(dpkg-deb -f "$deb" Package)" telemetryd
expect_equal Version "$(dpkg-deb -f "$deb" Version)" "${version}-1"
expect_equal Architecture "$(dpkg-deb -f "$deb" Architecture)" "$arch"
expect_equal Section "$(dpkg-deb -f "$deb" Section)" net
[[ $(dpkg-deb -f "$deb" Maintainer) =~ ^[^\<]+\ \<[^@\>]+@[^\>]+\>$ ]] || fail "Maintainer"
[[ -n $(dpkg-deb -f "$deb" Description | head -1) ]] || fail "Description has no summary"
info=$(dpkg-deb -I "$deb")
for member in conffiles postinst prerm postrm; do
  [[ $info =~ [[:space:]]${member}[[:space:]] ]] || fail "control member $member missing:"$'\n'"$info"
done
expect_equal conffiles "$(dpkg-deb -I "$deb" conffiles)" /etc/telemetryd/telemetryd.yaml

echo "== contents (dpkg-deb -c)"
catalogs=()
for f in "$source_dir"/config/catalogs/*.yaml; do catalogs+=("$(basename "$f")"); done
((${#catalogs[@]} > 0)) || fail "no catalogs in $source_dir/config/catalogs"
expected_files=(
  "-rwxr-xr-x root/root ./usr/bin/telemetryd"
  "-rwxr-xr-x root/root ./usr/bin/telemetry-send"
  "-rw-r--r-- root/root ./etc/telemetryd/telemetryd.yaml"
  "-rw-r--r-- root/root ./lib/systemd/system/telemetryd.service"
  "-rw-r--r-- root/root ./usr/lib/sysctl.d/60-telemetryd.conf"
  "-rw-r--r-- root/root ./usr/share/man/man1/telemetry-send.1.gz"
  "-rw-r--r-- root/root ./usr/share/man/man8/telemetryd.8.gz"
)
for c in "${catalogs[@]}"; do
  expected_files+=("-rw-r--r-- root/root ./usr/share/telemetryd/catalogs/$c")
done
# Every file, with its mode and owner, and nothing else.
actual_files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $1, $2, $6}' | sort)
expect_equal "files in the package" "$actual_files" "$(printf '%s\n' "${expected_files[@]}" | sort)"

root=$(mktemp -d /tmp/telemetryd-pkgroot.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status"
# The maintainer scripts run on this machine with DPKG_ROOT=$root (that is what chrootless means):
# they must leave the running system alone and put the unit's enablement into $root. The scratch
# root has no libc6 & co. in its database, hence --force-depends; it is thrown away, hence no fsync.
in_root_dpkg() {
  dpkg --root="$root" --log="$root/var/log/dpkg.log" --force-script-chrootless --force-depends \
    --force-unsafe-io "$@"
}
in_root_query() {
  dpkg-query --root="$root" "$@"
}

echo "== dpkg -i into $root"
in_root_dpkg -i "$deb"
expect_equal "status" "$(in_root_query -W -f='${Status} ${Version}' telemetryd)" \
  "install ok installed ${version}-1"
expect_equal "conffiles recorded by dpkg" "$(in_root_query -W -f='${Conffiles}' telemetryd)" \
  " /etc/telemetryd/telemetryd.yaml $(md5sum <"$source_dir/config/telemetryd.yaml" | cut -d' ' -f1)"
listed=$(dpkg --root="$root" -L telemetryd)
for entry in "${expected_files[@]}"; do
  path=${entry##* .}
  grep -qx -- "$path" <<<"$listed" || fail "dpkg -L does not list $path:"$'\n'"$listed"
done

echo "== installed files"
cmp "$source_dir/config/telemetryd.yaml" "$root/etc/telemetryd/telemetryd.yaml"
cmp "$source_dir/packaging/telemetryd.service" "$root/lib/systemd/system/telemetryd.service"
for c in "${catalogs[@]}"; do
  cmp "$source_dir/config/catalogs/$c" "$root/usr/share/telemetryd/catalogs/$c"
done
rmem_max=$(awk -F= '$1 ~ /^[[:space:]]*net\.core\.rmem_max[[:space:]]*$/ {gsub(/[[:space:]]/, "", $2); print $2}' \
  "$root/usr/lib/sysctl.d/60-telemetryd.conf")
if [[ ! $rmem_max =~ ^[0-9]+$ ]] || ((rmem_max < 67108864)); then
  fail "60-telemetryd.conf sets net.core.rmem_max to '$rmem_max', want at least 67108864"
fi
# postinst enabled the unit inside the scratch root, as "systemctl enable" would have.
expect_equal "multi-user.target.wants link" \
  "$(readlink "$root/etc/systemd/system/multi-user.target.wants/telemetryd.service")" \
  /lib/systemd/system/telemetryd.service

telemetryd=$root/usr/bin/telemetryd
telemetry_send=$root/usr/bin/telemetry-send

echo "== man pages"
# Compressed with gzip -n (no name, no time stamp), the same text as the sources, no groff warnings,
# and every option the executable's --help lists is described.
for page in man8/telemetryd.8 man1/telemetry-send.1; do
  gz=$root/usr/share/man/$page.gz
  gzip -t "$gz"
  expect_equal "$page.gz time stamp" "$(od -An -tu4 -j4 -N4 "$gz" | tr -d ' ')" 0
  zcat "$gz" | cmp - "$source_dir/docs/man/$(basename "$page")"
  warnings=$(zcat "$gz" | groff -man -ww -z 2>&1)
  [[ -z $warnings ]] || fail "groff warns about $page:"$'\n'"$warnings"
done
render() { zcat "$1" | groff -man -Tascii -P-cbou 2>/dev/null; }
telemetryd_page=$(render "$root/usr/share/man/man8/telemetryd.8.gz")
send_page=$(render "$root/usr/share/man/man1/telemetry-send.1.gz")
help=$("$telemetryd" --help)
options=$(grep -oE -- '--[a-z][a-z-]*' <<<"$help" | sort -u)
[[ -n $options ]] || fail "telemetryd --help lists no options"
for o in $options; do expect_contains "telemetryd.8 describes $o" "$telemetryd_page" "$o"; done
for section in SIGHUP SIGTERM FILES "EXIT STATUS"; do
  expect_contains "telemetryd.8" "$telemetryd_page" "$section"
done
send_help=$("$telemetry_send" --help)
expect_contains "installed telemetry-send --help" "$send_help" "usage: telemetry-send"
options=$(grep -oE -- '--[a-z][a-z-]*' <<<"$send_help" | sort -u)
[[ -n $options ]] || fail "telemetry-send --help lists no options"
for o in $options; do expect_contains "telemetry-send.1 describes $o" "$send_page" "$o"; done
expect_contains "telemetry-send.1" "$send_page" "EXIT STATUS"

echo "== installed executables"
expect_equal "telemetryd --version" "$("$telemetryd" --version)" "telemetryd $version"
expect_equal "telemetry-send --version" "$("$telemetry_send" --version)" "telemetry-send $version"
expect_contains "telemetryd --help: default config" "$help" "(default /etc/telemetryd/telemetryd.yaml)"
config=$root/etc/telemetryd/telemetryd.yaml
expect_contains "--print-config" "$("$telemetryd" --print-config --config "$config")" \
  "builtin_dir: /usr/share/telemetryd/catalogs"
# Depends covers every shared library the executables link: dpkg -S names the package of each.
libs=()
for exe in "$telemetryd" "$telemetry_send"; do
  for soname in $(readelf -d "$exe" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    lib=$(ldd "$exe" | awk -v s="$soname" '$1 == s {print $3}')
    [[ -n $lib ]] || fail "$exe: $soname not found by ldd"
    libs+=("$lib")
  done
done
((${#libs[@]} > 0)) || fail "the executables link no shared library"
# dpkg knows a library by the path its package ships, which may be the other side of /lib -> usr/lib.
owners=$(for lib in "${libs[@]}"; do echo "$lib"; realpath "$lib"; done | sort -u |
  xargs dpkg -S 2>/dev/null || true)
depends=$(dpkg-deb -f "$deb" Depends)
depends_names=$(tr ',' '\n' <<<"$depends" | awk '{print $1}')
for lib in "${libs[@]}"; do
  pkg=$(awk -F': ' -v a="$lib" -v b="$(realpath "$lib")" '$2 == a || $2 == b {print $1; exit}' \
    <<<"$owners")
  [[ -n $pkg ]] || fail "no package owns $lib"
  grep -qxF -- "${pkg%%:*}" <<<"$depends_names" || fail "Depends '$depends' lacks ${pkg%%:*} ($lib)"
done

expected=$("$dev_telemetryd" --check-config --config "$source_dir/config/telemetryd.yaml")
[[ $expected =~ \(([0-9]+)\ metrics\ from\ 1\ catalog ]] || fail "development daemon: $expected"
metrics=${BASH_REMATCH[1]}
((metrics > 0)) || fail "the built-in catalogs declare no metrics"
# Outside the namespace this machine has no /usr/share/telemetryd: the installed daemon must say so,
# which shows that it looks there and nowhere else.
if [[ ! -e /usr/share/telemetryd ]]; then
  set +e
  out=$("$telemetryd" --check-config --config "$config" 2>&1)
  status=$?
  set -e
  expect_equal "--check-config without the catalogs: exit status" "$status" 1
  expect_contains "--check-config without the catalogs" "$out" /usr/share/telemetryd/catalogs
fi
out=$(unshare --mount --propagation private -- sh -c \
  'mount -t overlay telemetryd-share -o "lowerdir=$1/usr/share:/usr/share" /usr/share && shift &&
   exec "$@"' sh "$root" "$telemetryd" --check-config --config "$config" 2>&1) ||
  fail "installed telemetryd --check-config:"$'\n'"$out"
echo "$out"
expect_equal "installed telemetryd --check-config" "$out" \
  "$config: configuration is valid ($metrics metrics from 1 catalog location(s))"

echo "== dpkg -i again, after local changes"
# An administrator disabled the unit and edited the config: installing the package again (as an
# upgrade would) keeps both.
rm "$root/etc/systemd/system/multi-user.target.wants/telemetryd.service"
echo "# edited here" >>"$config"
edited=$(md5sum <"$config")
in_root_dpkg -i "$deb"
expect_equal "edited conffile after reinstall" "$(md5sum <"$config")" "$edited"
[[ ! -e $root/etc/systemd/system/multi-user.target.wants/telemetryd.service ]] ||
  fail "reinstalling enabled the unit again"

echo "== dpkg -r"
in_root_dpkg -r telemetryd
expect_equal "status after remove" "$(in_root_query -W -f='${Status}' telemetryd)" \
  "deinstall ok config-files"
[[ ! -e $telemetryd && ! -e $root/usr/share/telemetryd ]] || fail "files left after remove"
[[ -f $config ]] || fail "remove deleted the conffile"
expect_equal "mask after remove" "$(readlink "$root/etc/systemd/system/telemetryd.service")" /dev/null

echo "== dpkg -P"
in_root_dpkg -P telemetryd
if in_root_query -W telemetryd >/dev/null 2>&1; then
  fail "dpkg still knows telemetryd after purge: $(in_root_query -W -f='${Status}' telemetryd)"
fi
left=$(find "$root" -mindepth 1 -name '*telemetryd*' -not -path "$root/var/log/*")
[[ -z $left ]] || fail "left after purge:"$'\n'"$left"

expect_equal "this machine's files and dpkg database" "$(host_state)" "$host_before"
echo "package test passed: $deb"
