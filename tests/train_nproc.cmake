# cac-train --nproc 2 end to end on the context-shift config (small dataset, 20 iterations, batch
# 8 per process, SyncBN): one progress stream and one results table (rank 0's), one set of files,
# a log without duplicates; then resume on one process, and a failing job's exit code.
# cac-eval --nproc 2 reports exactly the single-process metrics.
# Invoked with -DTRAIN= -DEVAL= -DCONFIG= -DWORK=.
file(REMOVE_RECURSE ${WORK})
set(overrides --set data.root=${WORK}/data --set data.context_shift.num_train=64 --set data.context_shift.num_val=8
              --set schedule.iterations=20 --set evaluation.interval=10 --set runtime.log_interval=5
              --set data.batch_size=8 --set model.sync_bn=true)
execute_process(COMMAND ${TRAIN} ${CONFIG} --nproc 2 --work-dir ${WORK}/run ${overrides} --stop-at 10
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT out MATCHES "data-parallel training: 2 processes \\(gloo\\)"
   OR NOT out MATCHES "SyncBN: [1-9][0-9]* batch norms synchronised" OR NOT out MATCHES "iter 10/20 \\| loss")
  message(FATAL_ERROR "cac-train --nproc 2 failed (${status}):\n${out}\n${err}")
endif()
string(REGEX MATCHALL "iter 10/20 \\| loss" progress "${out}")
list(LENGTH progress count)
if(NOT count EQUAL 1 OR NOT EXISTS ${WORK}/run/iter_10.pt)
  message(FATAL_ERROR "expected one progress line from rank 0 and iter_10.pt but got ${count}:\n${out}")
endif()
# resume on one process with the same global batch
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${overrides} --set data.batch_size=16 --resume
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REGEX MATCHALL "final \\(iteration 20\\): mIoU" finals "${out}")
list(LENGTH finals count)
if(NOT status EQUAL 0 OR NOT count EQUAL 1 OR out MATCHES "iter 5/20")
  message(FATAL_ERROR "resuming on one process failed (${status}):\n${out}\n${err}")
endif()
file(STRINGS ${WORK}/run/log.jsonl lines)
list(LENGTH lines count)
if(NOT count EQUAL 5)  # 4 train records and the final val record, each written once (none at --stop-at)
  message(FATAL_ERROR "expected 5 records in log.jsonl but got ${count}")
endif()
foreach(file latest.pt best.pt config.yaml curves.png)
  if(NOT EXISTS ${WORK}/run/${file})
    message(FATAL_ERROR "cac-train --nproc 2 did not write ${file}")
  endif()
endforeach()
foreach(nproc 1 2)
  execute_process(COMMAND ${EVAL} ${CONFIG} ${WORK}/run/latest.pt ${overrides} --nproc ${nproc} --out ${WORK}/eval${nproc}.json
                  RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX MATCHALL "8 images, [0-9.]+ ms/img" summary "${out}")
  list(LENGTH summary count)
  if(NOT status EQUAL 0 OR NOT count EQUAL 1)
    message(FATAL_ERROR "cac-eval --nproc ${nproc} failed (${status}):\n${out}\n${err}")
  endif()
  file(READ ${WORK}/eval${nproc}.json metrics${nproc})
endforeach()
if(NOT metrics1 STREQUAL metrics2)
  message(FATAL_ERROR "cac-eval --nproc 2 differs from one process:\n${metrics1}\n${metrics2}")
endif()
# A job whose workers fail exits non-zero and names the rank.
execute_process(COMMAND ${TRAIN} ${CONFIG} --nproc 2 --timeout 20 --work-dir ${WORK}/bad ${overrides}
                        --set data.type=ade20k --set data.root=${WORK}/missing
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(status EQUAL 0 OR NOT err MATCHES "cac_engine::launch_local: worker rank [01] of 2 exited with code 1")
  message(FATAL_ERROR "a failing job exited ${status}:\n${out}\n${err}")
endif()
message(STATUS "cac-train --nproc: ok")
