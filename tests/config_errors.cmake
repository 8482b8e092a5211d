# Config errors through the programs (issue 14): every one is reported before any work, names the
# source, the key and the value, and leaves no work directory behind (cac-eval is given the config
# as its checkpoint: the config is rejected before the checkpoint is read).
# Invoked with -DTRAIN= -DEVAL= -DCONFIG= -DWORK=.
file(REMOVE_RECURSE ${WORK})
set(small --set data.root=${WORK}/data --set data.context_shift.num_train=16 --set data.context_shift.num_val=4)
function(expect_error name expected)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(FIND "${err}" "${expected}" found)
  if(status EQUAL 0 OR found EQUAL -1 OR out MATCHES "iter [0-9]+/")
    message(FATAL_ERROR "${name}: expected a failure before training saying\n  ${expected}\nbut got (${status}):\n${out}\n${err}")
  endif()
endfunction()
expect_error("evaluation.mode typo" "cac-train: config error in --set: key 'evaluation.mode': expected one of whole, slide but got 'Whole'"
             ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${small} --set evaluation.mode=Whole)
expect_error("class count" "cac-train: config error in --set: key 'model.num_classes': expected 6 (the classes of data.context_shift.num_classes) but got 7"
             ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${small} --set model.num_classes=7)
expect_error("keep_last 0" "cac-train: config error in --set: key 'runtime.keep_last': expected an integer >= 1 but got '0'"
             ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${small} --set runtime.keep_last=0)
expect_error("normalize.std 0" "key 'data.normalize.std': expected a list of 3 numbers, each > 0 but got a list [0, 0, 0]"
             ${TRAIN} ${CONFIG} --work-dir ${WORK}/run ${small} --set "data.normalize.std=[0, 0, 0]")
expect_error("misspelt section" "cac-eval: config error in --set: key 'modle': unknown key (did you mean 'model'?)"
             ${EVAL} ${CONFIG} ${CONFIG} ${small} --set modle.cac=false)
if(EXISTS ${WORK}/run)
  message(FATAL_ERROR "a rejected config left the work directory ${WORK}/run")
endif()
message(STATUS "config errors: ok")
