#!/usr/bin/env bash
# Byte-identity battery for refactors: run a fixed set of ifu-extract commands on the mpdaf
# minicube and test-data into OUTDIR, then compare two such folders with compare.py.
#   bash tests/golden/run_golden.sh OUTDIR [GROUP...]     (default: every group)
#   python tests/golden/compare.py BASE OUTDIR [--subset]  (--subset: only the groups that ran)
# Groups: info image detect cutout mask extract contsub xcorr deblend report split merge run
#         pixtable spectra demo.  Uses the ifu-extract on PATH (or $IFX).  Each command's exit
# code and its stdout/stderr (machine paths removed) are kept in OUTDIR/logs/.
set -uo pipefail
OUT=${1:?usage: run_golden.sh OUTDIR [GROUP...]}; shift
REPO=$(cd "$(dirname "$0")/../.." && pwd)
IFX=${IFX:-ifu-extract}
export SOURCE_DATE_EPOCH=1700000000 PYTHONHASHSEED=0 MPLBACKEND=Agg
GROUPS_=${*:-info image detect cutout mask extract contsub xcorr deblend report split merge run pixtable spectra demo}
rm -rf "$OUT"; mkdir -p "$OUT/in" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
MP=$(python3 - 2>/dev/null <<'PY' || "$REPO/.venv/bin/python" -c 'import mpdaf,os;print(os.path.dirname(mpdaf.__file__))'
import mpdaf, os; print(os.path.dirname(mpdaf.__file__))
PY
)
cp "$MP/data/sdetect/minicube.fits" "$MP/data/sdetect/cat.txt" "$OUT/in/"
for f in "$REPO"/test-data/*; do cp "$f" "$OUT/in/"; done
cd "$OUT"
n=0
ifx() {  # ifx NAME args...: run one command, log its output and exit code
  local name=$1; shift; n=$((n+1))
  "$IFX" "$@" >"logs/$name.out" 2>"logs/$name.err"; echo $? >"logs/$name.rc"
  sed -i "s#$OUT#OUT#g" "logs/$name.out" "logs/$name.err"
}
want() { [[ " $GROUPS_ " == *" $1 "* ]]; }
M=in/minicube.fits; C=in/cat.txt
# Shared prerequisites of several groups.
need_white() { [ -f white.fits ] || ifx pre_white image $M -o white.fits; }
need_seg() { need_white; [ -f seg.fits ] || ifx pre_detect detect white.fits -o pre_det.tsv --segmap seg.fits; }
need_masks() { need_seg; [ -f masks.fits ] || ifx pre_mask mask $M $C --segmap seg.fits -o masks.fits --white white.fits; }
need_ext() { need_masks; [ -d ext ] || ifx pre_extract extract $M $C --masks masks.fits -o ext --fwhm 0.75 --threads 1; }

if want info; then
  ifx info_mini info $M; ifx info_json info --json $M; ifx info_wf info in/wf_cube.fits
fi
if want image; then
  ifx image_white image $M -o image_white.fits
  ifx image_band image $M -o image_band.fits --wave-range 6000 7000
  ifx image_line image $M -o image_line.fits --line 7050 --width 12
  ifx image_wf image in/wf_cube.fits -o image_wf.fits
fi
if want detect; then
  need_white
  ifx det_white detect white.fits -o det_white.tsv --segmap det_seg.fits --background det_bg.fits --rms det_rms.fits --plot det.png
  ifx det_cube detect $M -o det_cube.tsv --merge-catalog $C --segmap det_cube_seg.fits
  ifx det_field detect in/detect_field.fits -o det_field.tsv --mask in/detect_mask.fits --thresh 2 --filter-kernel gaussian
  ifx det_tiff detect in/gx_white.tiff -o det_tiff.tsv --allow-no-wcs
  ifx det_lines detect $M -o det_lines.tsv --line-scan --lines det_lines_lines.tsv --line-images det_lines_img.fits
  ifx det_local detect white.fits -o det_local.tsv --thresh-type local --catalog-format ecsv
fi
if want cutout; then
  ifx cut_cat cutout $M $C -o cut_cat --size 3
  ifx cut_pos cutout $M --ra 63.35596 --dec 10.46536 -o cut_pos --wave-range 6000 7000
fi
if want mask; then
  need_seg
  ifx mask_seg mask $M $C --segmap seg.fits -o mask_seg.fits
  ifx mask_inter mask $M $C --segmap seg.fits -o mask_inter.fits --mode inter --no-split
  ifx mask_vor mask $M $C --segmap seg.fits -o mask_vor.fits --voronoi --sky-grow 2
  ifx mask_psf mask $M $C -o mask_psf.fits --fwhm 0.8
  ifx mask_wf mask in/mask_cube.fits in/mask_catalog.txt --segmap in/mask_segmap_fine.fits -o mask_wf.fits
fi
if want extract; then
  need_masks
  ifx ext_ap extract $M $C --masks masks.fits -o ext_ap --fwhm 0.75 --aperture 0.6 --aperture 1.2 --marz ext_ap_marz.fits --threads 1
  ifx ext_img extract $M $C --masks masks.fits -o ext_img --image HST=white.fits --no-skysub --wave-range 5000 8000 --threads 2
  ifx ext_wf_mask mask in/wf_cube.fits in/wf_catalog.txt -o ext_wf_masks.fits --fwhm 0.7
  ifx ext_wf extract in/wf_cube.fits in/wf_catalog.txt --masks ext_wf_masks.fits -o ext_wf --threads 1 --fwhm 0.7 --psf-kind gaussian
  ifx ext_gx extract in/gx_minicube.fits in/gx_catalog.txt --masks in/gx_masks.fits -o ext_gx
fi
if want contsub; then
  ifx cs_poly contsub $M -o cs_poly.fits --continuum cs_cont.fits --threads 2
  ifx cs_med contsub in/wf_cube.fits -o cs_med.fits --method median --mask-window 6500 6600
fi
if want xcorr; then
  need_ext; rm -rf xc; cp -r ext xc
  ifx xc xcorr $M $C --masks masks.fits -o xc --skysub
fi
if want deblend; then
  need_masks
  ifx deb deblend $M $C --masks masks.fits -o deb --fwhm 0.75 --model-cube deb_model.fits --residual-cube deb_resid.fits
  ifx deb_blend deblend in/wf_blend_cube.fits in/wf_blend_catalog.txt -o deb_blend --fwhm 0.7 --model segment --no-gradients
fi
if want report; then
  need_ext; rm -rf rep; cp -r ext rep
  ifx rep report rep --threads 1 --segmap seg.fits --title golden
  rm -rf rep2; cp -r ext rep2; ifx rep_np report rep2 --no-plots --smooth 5
fi
if want split || want merge; then
  ifx split split $C -n 3 -o parts
  ifx split_csv split in/wf_catalog.txt -n 2 -o parts_csv --output-format csv --prefix p
fi
if want merge; then
  need_masks
  for p in parts/*; do
    ifx "mext_$(basename "$p")" extract $M "$p" --masks masks.fits -o "pout_$(basename "${p%.*}")" --fwhm 0.75 --threads 1
  done
  ifx merge merge pout_* -o merged --catalog $C --threads 1
fi
if want run; then
  ifx run_wf run in/wf_cube.fits in/wf_catalog.txt -o run_wf --threads 1
  ifx run_full run $M $C -o run_full --fwhm 0.75 --contsub --xcor --deblend --line-scan --aperture 0.8 --threads 2
  ifx run_nocat run in/wf_blend_cube.fits -o run_nocat --no-plots --threads 1
fi
if want pixtable; then
  P=in/pixtable_small.fits
  ifx pt_info pixtable info $P; ifx pt_info_json pixtable info --json $P
  ifx pt_ext pixtable extract $P -o pt_ext.fits --wave-range 5000 7000 --ifu 1 --threads 1
  ifx pt_ext_tab pixtable extract $P -o pt_ext_tab.fits --layout table --stack 1 --threads 1
  ifx pt_mask pixtable mask $P in/pixtable_mask.fits -o pt_mask.fits --threads 1
  ifx pt_origin pixtable origin $P -o pt_origin.fits --threads 1
  ifx pt_det pixtable detimage $P -o pt_det.fits --ifu 1 --png pt_det.png --threads 1
  ifx pt_plot pixtable plot $P -o pt_plot.png --kind sky --threads 1
  ifx pt_selfcal pixtable selfcal $P -o pt_selfcal.fits --corrections pt_corr.fits --mask-image in/pixtable_mask.fits --threads 1
fi
if want spectra; then
  ifx sp_ingest spectra ingest in/spectra_source_101.fits in/spectra_source_102.fits in/spectra_source_501.fits in/spectra_spec-0266-51630-0010.fits --store sp.ifxs
  ifx sp_query spectra query --store sp.ifxs -o sp_ids.txt --context mpdaf_air_linear_1p25
  ifx sp_query_all spectra query --store sp.ifxs -o sp_all_ids.txt
  ifx sp_get_mixed spectra get --store sp.ifxs --ids-file sp_all_ids.txt --format tsv --align -o sp_mixed.tsv
  ifx sp_query_t spectra query --store sp.ifxs --fields id,ra,dec,tag -o sp_table.tsv
  ifx sp_get spectra get --store sp.ifxs --ids-file sp_ids.txt --format tsv --align -o sp_get.tsv
  ifx sp_get_f spectra get --store sp.ifxs --ids-file sp_ids.txt --format fits --cutout 4760-4800 -o sp_get
  ifx sp_plot spectra plot --store sp.ifxs --ids-file sp_ids.txt --kind grid -o sp_grid.png
  ifx sp_plot_s spectra plot --store sp.ifxs --ids-file sp_ids.txt --kind stacked --cutout 4760-4800 -o sp_stack.png
fi
if want demo; then
  ifx demo demo -o demo --threads 1
fi
rm -rf in
echo "golden: $n commands, $(grep -lv '^0$' logs/*.rc | wc -l) non-zero exits, outputs in $OUT"
