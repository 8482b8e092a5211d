# End to end through the actual programs: cac-train (20 iterations of the context-shift config,
# small dataset), cac-eval of its checkpoint with --show-dir and --out, cac-infer on one image.
# Invoked with -DTRAIN= -DEVAL= -DINFER= -DCONFIG= -DWORK=.
file(REMOVE_RECURSE ${WORK})
set(overrides --set schedule.iterations=20 --set data.root=${WORK}/data --set data.context_shift.num_train=64
              --set data.context_shift.num_val=8 --set evaluation.interval=10 --set runtime.log_interval=5)
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${overrides}
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT out MATCHES "iter 20/20 \\| loss [0-9.]+ .* ETA" OR NOT out MATCHES "final \\(iteration 20\\): mIoU")
  message(FATAL_ERROR "cac-train failed (${status}):\n${out}\n${err}")
endif()
foreach(file latest.pt best.pt log.jsonl config.yaml curves.png)
  if(NOT EXISTS ${WORK}/run/${file})
    message(FATAL_ERROR "cac-train did not write ${file}")
  endif()
endforeach()
execute_process(COMMAND ${EVAL} ${CONFIG} ${WORK}/run/latest.pt ${overrides} --show-dir ${WORK}/show --out ${WORK}/metrics.json --branches
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT out MATCHES "8 images, [0-9.]+ ms/img: mIoU" OR NOT out MATCHES "branch oracle: mIoU")
  message(FATAL_ERROR "cac-eval failed (${status}):\n${out}\n${err}")
endif()
file(READ ${WORK}/metrics.json json)
if(NOT json MATCHES "\"mIoU\"" OR NOT EXISTS ${WORK}/show/cs_val_00000000_overlay.png)
  message(FATAL_ERROR "cac-eval did not write metrics.json or the overlays")
endif()
file(GLOB images ${WORK}/data/ADEChallengeData2016/images/validation/*.png)
list(GET images 0 image)
execute_process(COMMAND ${INFER} ${CONFIG} ${WORK}/run/latest.pt ${image} --out-dir ${WORK}/infer ${overrides}
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
get_filename_component(stem ${image} NAME_WE)
if(NOT status EQUAL 0 OR NOT EXISTS ${WORK}/infer/${stem}.png OR NOT EXISTS ${WORK}/infer/${stem}_overlay.png)
  message(FATAL_ERROR "cac-infer failed (${status}):\n${out}\n${err}")
endif()
# cac-infer never writes over an input, and keeps inputs of the same name apart.
file(MAKE_DIRECTORY ${WORK}/own ${WORK}/own/sub)
file(COPY ${image} DESTINATION ${WORK}/own)
file(COPY ${image} DESTINATION ${WORK}/own/sub)
get_filename_component(image_name ${image} NAME)
file(SHA256 ${WORK}/own/${image_name} before)
execute_process(COMMAND ${INFER} ${CONFIG} ${WORK}/run/latest.pt ${WORK}/own/${image_name} --out-dir ${WORK}/own ${overrides}
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(SHA256 ${WORK}/own/${image_name} after)
if(status EQUAL 0 OR NOT err MATCHES "cac-infer: expected outputs beside the inputs, not over them" OR NOT before STREQUAL after)
  message(FATAL_ERROR "cac-infer wrote over its input (${status}):\n${out}\n${err}")
endif()
execute_process(COMMAND ${INFER} ${CONFIG} ${WORK}/run/latest.pt ${WORK}/own/${image_name} ${WORK}/own/sub/${image_name}
                        --out-dir ${WORK}/same ${overrides}
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT EXISTS ${WORK}/same/${stem}.png OR NOT EXISTS ${WORK}/same/${stem}_2_overlay.png)
  message(FATAL_ERROR "cac-infer did not keep two inputs named ${image_name} apart (${status}):\n${out}\n${err}")
endif()
# A config error names the key and exits non-zero.
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${WORK}/bad --set optimizer.lr=fast
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(status EQUAL 0 OR NOT err MATCHES "cac-train: config error in --set: key 'optimizer.lr': expected a number but got 'fast'")
  message(FATAL_ERROR "cac-train accepted a bad override (${status}):\n${err}")
endif()
# A write that fails (here: the --out file's parent is a file) names the file and exits non-zero;
# the metrics written before stay as they were.
execute_process(COMMAND ${EVAL} ${CONFIG} ${WORK}/run/latest.pt ${overrides} --out ${WORK}/metrics.json/r.json
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(status EQUAL 0 OR NOT err MATCHES "cac-eval: cac_io::write_file: cannot write ${WORK}/metrics.json/r.json: "
   OR out MATCHES "wrote ")
  message(FATAL_ERROR "cac-eval --out into an unwritable place (${status}):\n${out}\n${err}")
endif()
file(READ ${WORK}/metrics.json json_after)
if(NOT json_after STREQUAL json)
  message(FATAL_ERROR "cac-eval changed metrics.json on a failed write")
endif()
message(STATUS "programs end to end: ok")
