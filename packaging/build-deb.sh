#!/usr/bin/env bash
# Build the Debian package: dist/pbxmesh_<version>_<arch>.deb, with plain dpkg-deb (no debhelper).
#
# The package carries pbxmesh's wheel and the wheels of everything it needs (with nats-py and
# nkeys, for NATS and its nkey_seed authentication), built here from the package registry for
# Debian's own /usr/bin/python3. Its postinst makes a private venv in /opt/pbxmesh from them
# with `pip --no-index`, so installing needs no network; /usr/bin/pbxmesh links into that venv.
# Debian 12's python3-aiohttp, python3-cryptography and python3-prometheus-client are older than
# pbxmesh's minimums, hence the private venv: what is installed is what the project tests.
# Maintainer scripts and templates: packaging/deb/.
#
# Needs: dpkg-deb (always there), python3-venv, and the package registry. Run as any user.
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

PY=/usr/bin/python3 # Debian's python3: the one the package depends on, whatever PATH says
TEMPLATES=packaging/deb
WORK=build/deb
MAINTAINER=${PBXMESH_DEB_MAINTAINER:-"pbxmesh maintainers <maintainers@pbxmesh.invalid>"}

die() { echo "build-deb: $*" >&2; exit 1; }
[ -x "$PY" ] || die "$PY not found (apt-get install python3)"
"$PY" -c 'import ensurepip, venv' 2>/dev/null || die "python3-venv is missing (apt-get install python3-venv)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: build on Debian"

pyversion=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/pbxmesh/__init__.py)
[ -n "$pyversion" ] || die "no __version__ in src/pbxmesh/__init__.py"
# PEP 440 → Debian: pre-releases and dev releases sort before the release (0.2.0rc1 → 0.2.0~rc1).
version=$(printf '%s' "$pyversion" | sed -E 's/\.?(a|b|rc|dev)([0-9]*)/~\1\2/g')
read -r pymajor pyminor < <("$PY" -c 'import sys; print(*sys.version_info[:2])')

# 1. The wheels, from a clean copy of the sources (an in-tree build could pick up stale files).
rm -rf "$WORK/src" "$WORK/wheels" "$WORK/root"
mkdir -p "$WORK/src" "$WORK/wheels" dist
cp -r pyproject.toml README.md src "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
if [ ! -x "$WORK/venv/bin/pip" ] || ! cmp -s <("$PY" -VV) "$WORK/venv/.python"; then
    rm -rf "$WORK/venv"
    "$PY" -m venv "$WORK/venv"
    "$PY" -VV >"$WORK/venv/.python"
fi
echo "build-deb: building the wheels of pbxmesh $pyversion and its dependencies" >&2
"$WORK/venv/bin/pip" wheel --quiet --disable-pip-version-check --wheel-dir "$WORK/wheels" \
    "./$WORK/src[nats]" nkeys >&2
ls "$WORK/wheels/pbxmesh-$pyversion-"*.whl >/dev/null 2>&1 || die "no pbxmesh wheel was built"
# Binary wheels (aiohttp, cryptography...) tie the package to this architecture and Python.
arch=all
for whl in "$WORK/wheels"/*.whl; do
    case "$whl" in *-none-any.whl) ;; *) arch=$(dpkg --print-architecture) ;; esac
done

# 2. The tree.
root="$WORK/root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/pbxmesh/wheels" \
    "$root/lib/systemd/system" "$root/etc/pbxmesh" "$root/etc/corosync/uidgid.d" \
    "$root/usr/share/doc/pbxmesh/docs" "$root/usr/share/doc/pbxmesh/examples" \
    "$root/usr/share/man/man1"
install -m 0644 "$WORK/wheels"/*.whl "$root/usr/lib/pbxmesh/wheels/"
ln -s /opt/pbxmesh/bin/pbxmesh "$root/usr/bin/pbxmesh"
install -m 0644 packaging/pbxmesh.service "$root/lib/systemd/system/pbxmesh.service"
install -m 0644 packaging/pbxmesh.toml.example "$root/etc/pbxmesh/pbxmesh.toml"
install -m 0644 "$TEMPLATES/uidgid" "$root/etc/corosync/uidgid.d/pbxmesh"
install -m 0644 packaging/pbxmesh.toml.example "$root/usr/share/doc/pbxmesh/examples/"
install -m 0644 README.md "$root/usr/share/doc/pbxmesh/"
install -m 0644 docs/*.md "$root/usr/share/doc/pbxmesh/docs/"
install -m 0644 "$TEMPLATES/pbxmesh.1" "$root/usr/share/man/man1/"
gzip -9n "$root/usr/share/man/man1/pbxmesh.1"
find "$root/usr/share/doc/pbxmesh" -name '*.md' -size +4k -exec gzip -9n {} +

epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
{
    echo "pbxmesh ($version) unstable; urgency=medium"
    echo
    echo "  * pbxmesh $pyversion, built from its sources with the wheels it needs."
    echo
    echo " -- $MAINTAINER  $(LC_ALL=C date -u -R -d "@$epoch")"
} | gzip -9n >"$root/usr/share/doc/pbxmesh/changelog.gz"

{
    first=$(git log --format=%ad --date=format:%Y 2>/dev/null | tail -n 1 || true)
    last=$(date -u -d "@$epoch" +%Y)
    years=${first:-$last}; [ "$years" = "$last" ] || years="$years-$last"
    sed "s|@YEARS@|$years|" "$TEMPLATES/copyright"
    echo
    echo "The wheels in /usr/lib/pbxmesh/wheels, each with its license text in its .dist-info:"
    echo
    "$PY" - "$WORK/wheels" <<'EOF'
import email.parser, pathlib, sys, zipfile
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    lic = msg.get("License-Expression") or ""
    if not lic:
        classifiers = [c.split(" :: ")[-1] for c in msg.get_all("Classifier") or []
                       if c.startswith("License ::")]
        lic = ", ".join(classifiers) or (msg.get("License") or "see its dist-info").splitlines()[0]
    print(f"  {msg['Name']} {msg['Version']}: {lic}")
EOF
} >"$root/usr/share/doc/pbxmesh/copyright"

# 3. Control files.
installed_size=$(du -sk --apparent-size "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s|@INSTALLED_SIZE@|$installed_size|" \
    -e "s|@PYTHON_DEPENDS@|python3 (>= $pymajor.$pyminor~), python3 (<< $pymajor.$((pyminor + 1)))|" \
    "$TEMPLATES/control.in" >"$root/DEBIAN/control"
for script in postinst prerm postrm; do
    sed -e "s|@REQUIREMENTS@|'pbxmesh[nats]==$pyversion' nkeys|" "$TEMPLATES/$script" \
        >"$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
done
printf '%s\n' /etc/pbxmesh/pbxmesh.toml /etc/corosync/uidgid.d/pbxmesh >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

# 4. The package.
out="dist/pbxmesh_${version}_${arch}.deb"
SOURCE_DATE_EPOCH=$epoch dpkg-deb --build --root-owner-group -Zxz "$root" "$out" >&2
echo "$out"
