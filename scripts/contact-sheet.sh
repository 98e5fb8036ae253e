#!/usr/bin/env bash
# Writes a contact sheet of a clip: 8 thumbnails evenly spread over its length, 4 × 2, as a small
# PNG (a 256-colour palette). Needs ffmpeg and ffprobe.
# Usage: scripts/contact-sheet.sh CLIP.mp4 SHEET.png [THUMB_WIDTH=200]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CLIP SHEET.png [THUMB_WIDTH]" >&2; exit 2; }
clip=$1 sheet=$2 width=${3:-200}
frames=$(ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$clip")
[ "${frames:-0}" -ge 8 ] || { echo "error: $clip has ${frames:-no} frames; a sheet needs at least 8" >&2; exit 1; }
every=$((frames / 8))
ffmpeg -v error -y -i "$clip" -filter_complex \
  "select='not(mod(n\,$every))',scale=$width:-2,tile=4x2:padding=4:margin=4,split[a][b];[a]palettegen=max_colors=256[p];[b][p]paletteuse=dither=bayer:bayer_scale=3" \
  -frames:v 1 "$sheet"
echo "wrote $sheet: frames 0, $every, …, $((7 * every)) of $frames"
