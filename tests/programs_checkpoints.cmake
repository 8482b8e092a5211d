# cac-eval and cac-infer with checkpoints written by PyTorch and hostile images (issue 14 and 15):
# one ctest entry per CASE. Invoked with -DEVAL= -DINFER= -DCONFIGS= (configs/context_shift)
# -DFIXTURES= (tests/fixtures/programs, see make_program_fixtures.py) -DWORK= -DCASE=.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(CAC ${CONFIGS}/fcn_tiny_cac.yaml)
set(BASELINE ${CONFIGS}/fcn_tiny_baseline.yaml)
set(OFFICIAL ${FIXTURES}/fcn_tiny_cac_official.pth)
set(LEGACY ${FIXTURES}/fcn_tiny_mmseg_legacy.pth)
# No dataset anywhere: data.root names a directory that must still be missing afterwards.
set(NO_DATA --set data.root=${WORK}/no-dataset)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(status ${status} PARENT_SCOPE)
  set(out "${out}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
endfunction()

# Fails unless `png` exists and is `width` x `height` (the IHDR fields).
function(expect_png png width height)
  if(NOT EXISTS ${png})
    message(FATAL_ERROR "missing output ${png}:\n${out}\n${err}")
  endif()
  file(READ ${png} ihdr OFFSET 16 LIMIT 8 HEX)
  string(SUBSTRING ${ihdr} 0 8 w)
  string(SUBSTRING ${ihdr} 8 8 h)
  math(EXPR w "0x${w}")
  math(EXPR h "0x${h}")
  if(NOT w EQUAL ${width} OR NOT h EQUAL ${height})
    message(FATAL_ERROR "${png} is ${w}x${h}, expected ${width}x${height}")
  endif()
endfunction()

function(expect_failure what pattern)
  if(status EQUAL 0 OR NOT err MATCHES "${pattern}")
    message(FATAL_ERROR "${what}: expected a failure matching '${pattern}' but got (${status}):\n${out}\n${err}")
  endif()
endfunction()

if(CASE STREQUAL "infer_pth")
  # An official CAC .pth (zip) and an mmseg .pth (legacy torch.save), written by PyTorch, segment an
  # image with only the config, the checkpoint and the image.
  # The official layout is detected (decode_head.proj.*); the legacy file is read as mmseg.
  run(${INFER} ${CAC} ${OFFICIAL} ${FIXTURES}/street_48x40.png --out-dir ${WORK}/cac ${NO_DATA})
  if(NOT status EQUAL 0 OR NOT out MATCHES "loaded every key of [^\n]*fcn_tiny_cac_official.pth \\(50 tensors, cac layout, detected\\)")
    message(FATAL_ERROR "cac-infer with an official CAC .pth failed (${status}):\n${out}\n${err}")
  endif()
  expect_png(${WORK}/cac/street_48x40.png 48 40)
  expect_png(${WORK}/cac/street_48x40_overlay.png 48 40)
  run(${INFER} ${BASELINE} ${LEGACY} ${FIXTURES}/street_48x40.png --out-dir ${WORK}/mmseg ${NO_DATA})
  if(NOT status EQUAL 0 OR NOT out MATCHES "\\(44 tensors, mmseg layout, detected\\)")
    message(FATAL_ERROR "cac-infer with a legacy mmseg .pth failed (${status}):\n${out}\n${err}")
  endif()
  expect_png(${WORK}/mmseg/street_48x40.png 48 40)
  if(EXISTS ${WORK}/no-dataset)
    message(FATAL_ERROR "cac-infer created the dataset directory ${WORK}/no-dataset")
  endif()
elseif(CASE STREQUAL "eval_pth")
  # cac-eval scores the .pth on the (generated) validation split.
  run(${EVAL} ${CAC} ${OFFICIAL} --checkpoint-source cac --set data.root=${WORK}/data --set data.context_shift.num_train=8
      --set data.context_shift.num_val=4 --out ${WORK}/metrics.json)
  if(NOT status EQUAL 0 OR NOT out MATCHES "4 images, [0-9.]+ ms/img: mIoU" OR NOT EXISTS ${WORK}/metrics.json)
    message(FATAL_ERROR "cac-eval with an official CAC .pth failed (${status}):\n${out}\n${err}")
  endif()
elseif(CASE STREQUAL "wrong_checkpoint")
  # The official layout read as mmseg: file, layout, keys and the fix.
  run(${INFER} ${CAC} ${OFFICIAL} ${FIXTURES}/street_48x40.png --checkpoint-source mmseg --out-dir ${WORK}/out ${NO_DATA})
  expect_failure("official .pth read as mmseg"
                 "cac-infer: cac_engine::load_checkpoint: expected [^\n]*fcn_tiny_cac_official.pth \\(a PyTorch checkpoint read in the mmseg layout\\) to hold every key.*6 missing, 6 unexpected.*decode_head.cac.context_projector.0.weight.*use --checkpoint-source cac")
  # A checkpoint of another model: the baseline's weights for the CAC config, the CAC weights for the baseline.
  run(${EVAL} ${CAC} ${LEGACY} ${NO_DATA})
  expect_failure("baseline .pth for the CAC model" "cac-eval: [^\n]*fcn_tiny_mmseg_legacy.pth \\(a PyTorch checkpoint read in the mmseg layout, detected\\).*6 missing, 0 unexpected.*model.num_classes, model.cac")
  run(${INFER} ${BASELINE} ${OFFICIAL} ${FIXTURES}/street_48x40.png --checkpoint-source cac --set model.num_classes=5
      --set data.context_shift.num_classes=5 ${NO_DATA})
  expect_failure("CAC .pth for a 5-class baseline" "fcn_tiny_cac_official.pth \\(a PyTorch checkpoint read in the cac layout\\).*0 missing, 6 unexpected, 2 with another shape.*decode_head.conv_seg.weight: checkpoint \\[6, 48, 1, 1\\], module \\[5, 48, 1, 1\\]")
  if(EXISTS ${WORK}/out OR EXISTS ${WORK}/no-dataset)
    message(FATAL_ERROR "a refused checkpoint still wrote outputs or a dataset")
  endif()
elseif(CASE STREQUAL "thin_image")
  # 3000x2 becomes 64x0 at the test scale: refused naming the file and both sizes, not inside OpenCV.
  run(${INFER} ${CAC} ${OFFICIAL} ${FIXTURES}/street_48x40.png ${FIXTURES}/thin_3000x2.png --checkpoint-source cac
      --out-dir ${WORK}/out ${NO_DATA})
  expect_failure("a 3000x2 image" "cac-infer: expected an image that keeps at least one pixel per side at the test scale, but [^\n]*thin_3000x2.png \\(3000x2, width x height\\) becomes 64x0 at data.test_pipeline.img_scale \\[64, 64\\]")
elseif(CASE STREQUAL "huge_image")
  # 8000x8000: the scores at the image's size need ~3.6 GB with 6 classes; refused before inference.
  run(${INFER} ${CAC} ${OFFICIAL} ${FIXTURES}/huge_8000x8000.png --checkpoint-source cac --max-memory 1
      --out-dir ${WORK}/out ${NO_DATA})
  expect_failure("an 8000x8000 image" "cac-infer: expected [^\n]*huge_8000x8000.png \\(8000x8000\\) to fit in memory but segmenting it needs about 3.6 GB for the class scores at the image's size \\(6 classes x 8000 x 8000 float32.* while 1.0 GB are allowed \\(--max-memory\\); segment a downscaled copy")
elseif(CASE STREQUAL "image_directory")
  # A directory stands for its images, sorted, not recursive; other files are left out.
  file(MAKE_DIRECTORY ${WORK}/images/sub)
  foreach(name b.png a.PNG sub/c.png)
    configure_file(${FIXTURES}/street_48x40.png ${WORK}/images/${name} COPYONLY)
  endforeach()
  file(WRITE ${WORK}/images/notes.txt "not an image\n")
  run(${INFER} ${CAC} ${OFFICIAL} ${WORK}/images --checkpoint-source cac --out-dir ${WORK}/out ${NO_DATA})
  if(NOT status EQUAL 0 OR NOT out MATCHES "images/a.PNG -> [^\n]*\n[^\n]*images/b.png -> " OR out MATCHES "c.png"
     OR out MATCHES "notes")
    message(FATAL_ERROR "cac-infer on a directory (${status}):\n${out}\n${err}")
  endif()
  expect_png(${WORK}/out/a.png 48 40)
  expect_png(${WORK}/out/b_overlay.png 48 40)
  file(MAKE_DIRECTORY ${WORK}/empty)
  run(${INFER} ${CAC} ${OFFICIAL} ${WORK}/empty --checkpoint-source cac --out-dir ${WORK}/out2 ${NO_DATA})
  expect_failure("an empty directory" "cac-infer: expected images \\(.jpg, .png, ...\\) in the directory [^\n]*empty but found none")
else()
  message(FATAL_ERROR "unknown CASE '${CASE}'")
endif()
message(STATUS "programs checkpoints ${CASE}: ok")
