#!/usr/bin/env bash
# Print the packages of scripts/debian-packages.txt, one per line: every section, or
# only the named ones. The one reader of the one list: `make setup`, the agent's
# Containerfile and the Vagrant nodes all call it, so none can drift from the others.
#
#   debian-packages.sh                 # every package
#   debian-packages.sh agent [cni...]  # the packages of these sections
#
# An unknown section is an error: a typo must fail a build, not install nothing.
set -euo pipefail

list="$(dirname "${BASH_SOURCE[0]}")/debian-packages.txt"

awk -v wanted="$*" '
    BEGIN {
        count = split(wanted, names, " ")
        for (i = 1; i <= count; i++) want[names[i]] = 1
    }
    /^[[:space:]]*(#|$)/ { next }
    /^\[[a-z0-9-]+\][[:space:]]*$/ {
        section = $0
        gsub(/[][[:space:]]/, "", section)
        seen[section] = 1
        next
    }
    count == 0 || (section in want) { print $1 }
    END {
        status = 0
        for (name in want) {
            if (!(name in seen)) {
                printf "debian-packages: no section [%s] in the list\n", name > "/dev/stderr"
                status = 2
            }
        }
        exit status
    }
' "$list"
