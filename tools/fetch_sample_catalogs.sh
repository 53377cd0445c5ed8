#!/usr/bin/env bash
# Download the Debian packages whose gettext catalogs (.mo files) make up
# data/sample, and unpack them WITHOUT installing anything.
#
#   bash tools/fetch_sample_catalogs.sh /tmp/catalogs
#   python tools/extract_gettext.py --langs fr,de --out data/sample --seed 0 /tmp/catalogs/root
#
# Needs a Debian 12 (bookworm) apt configuration (run `apt-get update` first);
# no root rights are needed for `apt-get download` and `dpkg-deb -x`.
# DEST/debs gets the .deb files, DEST/root/PACKAGE the unpacked contents
# (catalogs under usr/share/locale/*/LC_MESSAGES, licenses under
# usr/share/doc/PACKAGE/copyright).
#
# The versions are the ones data/sample was built from. Debian replaces a
# version in the archive when a point release or security update supersedes
# it; the script then falls back to the current version with a warning, and
# the regenerated data may differ slightly from the shipped data.
set -euo pipefail

dest=${1:?usage: $0 DEST_DIR}
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
    echo "error: $dest is not empty (old .deb files would be mixed in)" >&2
    exit 1
fi

# Chosen for large fr and de catalogs; packages without any .mo for fr/de
# (e.g. gdb, git-man, cups-common, gparted in bookworm) are left out.
PACKAGES=(
    apt=2.6.2
    aptitude-common=0.8.13-5
    binutils-common=2.40-2
    bison=2:3.8.2+dfsg-1+b1
    coreutils=9.1-1
    debconf-i18n=1.5.82
    diffutils=1:3.8-4
    dpkg=1.21.23
    e2fsprogs-l10n=1.47.0-2
    evolution-data-server-common=3.46.4-2+deb12u1
    findutils=4.9.0-4
    gcc-12-locales=12.2.0-14+deb12u1
    gedit-common=44.2-1
    gettext=0.21-12
    gnome-control-center-data=1:43.6-2~deb12u1
    gnome-disk-utility=43.0-1
    gnome-shell-common=43.9-0+deb12u2
    gnome-software-common=43.5-1~deb12u2
    gnupg-l10n=2.2.40-1.1+deb12u2
    grub-common=2.06-13+deb12u2
    libc-l10n=2.36-9+deb12u14
    libglib2.0-data=2.74.6-2+deb12u9
    libgtk-3-common=3.24.38-2~deb12u3
    libsane-common=1.2.1-2
    man-db=2.11.2-2
    mutt=2.2.12-0.1~deb12u2
    nano=7.2-1+deb12u1
    nautilus-data=43.2-1
    procps=2:4.0.2-3
    rhythmbox-data=3.4.6-2
    synaptic=0.91.3
    systemd=252.39-1~deb12u2
    tar=1.34+dfsg-1.2+deb12u1
    totem-common=43.0-2
    util-linux-locales=2.38.1-5+deb12u3
    wget=1.21.3-1+deb12u1
    xfce4-panel=4.18.2-1
)

mkdir -p "$dest/debs" "$dest/root"
cd "$dest/debs"
for spec in "${PACKAGES[@]}"; do
    if ! apt-get download -q "$spec"; then
        name=${spec%%=*}
        echo "warning: $spec is no longer in the archive, using the current $name" >&2
        apt-get download -q "$name"
    fi
done

for deb in *.deb; do
    package=$(dpkg-deb --field "$deb" Package)
    mkdir -p "../root/$package"
    dpkg-deb --extract "$deb" "../root/$package"
    echo "$package $(dpkg-deb --field "$deb" Version)"
done > ../versions.txt
echo "unpacked $(wc -l < ../versions.txt) packages into $dest/root (versions in $dest/versions.txt)"
