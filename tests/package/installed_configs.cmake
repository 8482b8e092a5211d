# The installed configs: present under <prefix>/<datadir>/cac/configs, and what an installed
# program reads. A relocated copy of the installed cac-demo (bin/ and share/ copied elsewhere, the
# source tree still in place) is given an invalid baseline config: its error must name the
# relocated file, proving the lookup is relative to the program and not the source tree.
# Invoked with -DPREFIX= -DBINDIR= -DDATADIR= -DWORK=.
set(configs ${PREFIX}/${DATADIR}/cac/configs)
foreach(file context_shift/fcn_tiny_cac.yaml context_shift/fcn_tiny_baseline.yaml _base_/runtime.yaml
             _base_/datasets/context_shift.yaml ade20k/fcn_mobilenetv2_cac_160k.yaml)
  if(NOT EXISTS ${configs}/${file})
    message(FATAL_ERROR "the install has no ${configs}/${file}")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/prefix/${BINDIR} ${WORK}/prefix/${DATADIR}/cac)
file(COPY ${PREFIX}/${BINDIR}/cac-demo DESTINATION ${WORK}/prefix/${BINDIR})
file(COPY ${configs} DESTINATION ${WORK}/prefix/${DATADIR}/cac)
file(REAL_PATH ${WORK}/prefix/${DATADIR}/cac/configs/context_shift/fcn_tiny_baseline.yaml broken)
file(WRITE ${broken} "_base_: [../_base_/runtime.yaml, ../_base_/datasets/context_shift.yaml]\n"
                     "model: {name: fcn_tiny, num_classes: 6}\nruntime: {keep_last: 0}\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E env --unset=CAC_CONFIGS_DIR --unset=LD_LIBRARY_PATH
                        ${WORK}/prefix/${BINDIR}/cac-demo --datasets shift --iterations 1 --work-dir ${WORK}/demo
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(FIND "${err}" "config error in ${broken}: key 'runtime.keep_last': expected an integer >= 1 but got '0'" found)
if(status EQUAL 0 OR found EQUAL -1)
  message(FATAL_ERROR "the relocated cac-demo did not read its own configs (${status}):\n${out}\n${err}")
endif()
message(STATUS "installed configs: ok")
