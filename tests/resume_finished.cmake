# cac-train --resume on a finished run (issue 14): exits 0 with a message saying where the run
# stands and how to train longer, and rewrites nothing: every file of the run keeps its bytes, inode
# and modification time (nanoseconds), and no file appears or goes. Raising schedule.iterations
# then continues the run.
# Invoked with -DTRAIN= -DCONFIG= -DWORK=.
file(REMOVE_RECURSE ${WORK})
set(small --set data.root=${WORK}/data --set data.context_shift.num_train=16 --set data.context_shift.num_val=4
          --set runtime.log_interval=2 --set runtime.checkpoint_interval=2 --set evaluation.interval=0)
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${small} --set schedule.iterations=4
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT out MATCHES "final \\(iteration 4\\): mIoU")
  message(FATAL_ERROR "cac-train failed (${status}):\n${out}\n${err}")
endif()
function(snapshot variable)
  file(GLOB names RELATIVE ${WORK}/run ${WORK}/run/*)
  list(SORT names)
  set(state "${names}\n")
  foreach(name IN LISTS names)
    file(SHA256 ${WORK}/run/${name} hash)
    execute_process(COMMAND stat -c "%i %y %s" ${WORK}/run/${name} OUTPUT_VARIABLE stat)
    string(APPEND state "${name} ${hash} ${stat}")
  endforeach()
  set(${variable} "${state}" PARENT_SCOPE)
endfunction()
snapshot(before)
foreach(name latest.pt iter_2.pt iter_4.pt log.jsonl config.yaml curves.png)
  if(NOT before MATCHES "${name} ")
    message(FATAL_ERROR "the run lacks ${name}:\n${before}")
  endif()
endforeach()
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${small} --set schedule.iterations=4 --resume
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
snapshot(after)
set(expected "work dir ${WORK}/run already finished at iteration 4 of 4; nothing to do, no file rewritten — to train longer, raise schedule.iterations (e.g. --set schedule.iterations=8) and --resume again")
string(FIND "${out}" "${expected}" found)
if(NOT status EQUAL 0 OR found EQUAL -1 OR out MATCHES "iter [0-9]+/" OR out MATCHES "final \\(iteration")
  message(FATAL_ERROR "--resume of a finished run: expected exit 0 and\n  ${expected}\nbut got (${status}):\n${out}\n${err}")
endif()
if(NOT before STREQUAL after)
  message(FATAL_ERROR "--resume of a finished run changed its files:\nbefore:\n${before}\nafter:\n${after}")
endif()
# Raising schedule.iterations continues it.
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${small} --set schedule.iterations=6 --resume
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT out MATCHES "iter 6/6 \\| loss" OR out MATCHES "iter 4/6" OR NOT EXISTS ${WORK}/run/iter_6.pt)
  message(FATAL_ERROR "--resume with more iterations did not continue the run (${status}):\n${out}\n${err}")
endif()
message(STATUS "resume of a finished run: ok")
