# A full disk through the programs (issue 14). A small tmpfs is mounted in a private mount namespace
# (`unshare --mount` as root, else `unshare --user --map-root-user --mount`), so it disappears with
# the namespace however the test ends; without either the test is skipped. Then, with the disk full:
#  1. cac-train into an empty work dir: the error names config.yaml and ENOSPC; no config.yaml, no temporary.
#  2. cac-train with room for config.yaml and the log but not a checkpoint: the error names the
#     checkpoint and ENOSPC; config.yaml is whole; the log's records are whole lines; no temporary.
#  3. cac-train --resume of a run copied in: the same error; latest.pt, iter_2.pt and config.yaml
#     keep their bytes; once space is freed, --resume finishes the run with one record per iteration.
#  4. cac-eval --out: the error names the file; no metrics file, no temporary.
# Invoked with -DTRAIN= -DEVAL= -DCONFIG= -DWORK= (and -DINSIDE=ON inside the namespace).
if(NOT INSIDE)
  file(REMOVE_RECURSE ${WORK})
  file(MAKE_DIRECTORY ${WORK}/disk)
  find_program(UNSHARE unshare)
  foreach(namespace "--mount" "--user;--map-root-user;--mount")
    if(NOT UNSHARE)
      break()
    endif()
    execute_process(COMMAND ${UNSHARE} ${namespace} -- mount -t tmpfs -o size=1M tmpfs ${WORK}/disk
                    RESULT_VARIABLE probe OUTPUT_QUIET ERROR_QUIET)
    if(probe EQUAL 0)
      execute_process(COMMAND ${UNSHARE} ${namespace} -- ${CMAKE_COMMAND} -DINSIDE=ON -DTRAIN=${TRAIN} -DEVAL=${EVAL}
                              -DCONFIG=${CONFIG} -DWORK=${WORK} -P ${CMAKE_CURRENT_LIST_FILE}
                      RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
      if(NOT status EQUAL 0)
        message(FATAL_ERROR "full disk (unshare ${namespace}):\n${out}\n${err}")
      endif()
      string(REGEX REPLACE "^-- " "" out "${out}")
      message(STATUS "${out}full disk: ok")
      return()
    endif()
  endforeach()
  message(STATUS "full disk: skipped: cannot mount a tmpfs here (needs unshare and root with CAP_SYS_ADMIN, "
                 "or user namespaces)")
  return()
endif()

set(DISK ${WORK}/disk)
execute_process(COMMAND mount -t tmpfs -o size=8M tmpfs ${DISK} RESULT_VARIABLE status ERROR_VARIABLE err)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "mount -t tmpfs failed inside the namespace: ${err}")
endif()
set(ENOSPC "No space left on device")
set(small --set data.root=${WORK}/data --set data.context_shift.num_train=16 --set data.context_shift.num_val=4
          --set schedule.iterations=6 --set runtime.log_interval=2 --set runtime.checkpoint_interval=2
          --set evaluation.interval=0)

function(fail what)
  execute_process(COMMAND umount ${DISK})  # the namespace would drop it anyway
  message(FATAL_ERROR "${what}")
endfunction()
# Fills the disk, then frees `kib` KiB of it again (tmpfs counts whole pages).
function(fill kib)
  execute_process(COMMAND dd if=/dev/zero of=${DISK}/filler bs=64K OUTPUT_QUIET ERROR_QUIET)
  if(kib GREATER 0)
    execute_process(COMMAND truncate -s -${kib}K ${DISK}/filler)
  endif()
endfunction()
function(expect_failure name file)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(FIND "${err}" "cannot write ${file}: ${ENOSPC}" found)
  if(status EQUAL 0 OR found EQUAL -1)
    fail("${name}: expected a failure naming ${file} and '${ENOSPC}' but got (${status}):\n${out}\n${err}")
  endif()
  set(last_out "${out}" PARENT_SCOPE)
endfunction()
function(expect_no_temporaries dir)
  file(GLOB_RECURSE temporaries ${dir}/*.tmp*)
  if(temporaries)
    fail("temporaries left behind: ${temporaries}")
  endif()
endfunction()
# Every line of a log.jsonl is a whole JSON record; returns the "mode:iter" of each.
function(read_log file variable)
  file(STRINGS ${file} lines)
  set(records "")
  foreach(line IN LISTS lines)
    string(JSON iter ERROR_VARIABLE bad GET "${line}" iter)
    string(JSON mode ERROR_VARIABLE bad_mode GET "${line}" mode)
    if(bad OR bad_mode)
      fail("${file} holds a line that is not a whole record: '${line}'")
    endif()
    list(APPEND records ${mode}:${iter})
  endforeach()
  set(${variable} "${records}" PARENT_SCOPE)
endfunction()
function(same_bytes a b)
  file(SHA256 ${a} ha)
  file(SHA256 ${b} hb)
  if(NOT ha STREQUAL hb)
    fail("${a} changed (expected the bytes of ${b})")
  endif()
endfunction()

# A good run, off the small disk: 2 of 6 iterations.
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${WORK}/good ${small} --stop-at 2
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT EXISTS ${WORK}/good/iter_2.pt)
  fail("cac-train (the good run) failed (${status}):\n${out}\n${err}")
endif()
file(SIZE ${WORK}/good/iter_2.pt checkpoint_size)
set(room 16)  # KiB: config.yaml and the log fit, a checkpoint does not
if(checkpoint_size LESS 40000)
  fail("a checkpoint of ${checkpoint_size} bytes is too small for this test's ${room} KiB of room")
endif()

# 1. A full disk: config.yaml is the first file cac-train writes.
fill(0)
expect_failure("cac-train on a full disk" ${DISK}/full/config.yaml ${TRAIN} ${CONFIG} --work-dir ${DISK}/full ${small})
if(EXISTS ${DISK}/full/config.yaml)
  fail("a failed write left ${DISK}/full/config.yaml")
endif()
expect_no_temporaries(${DISK})

# 2. Room for config.yaml and the log, not for a checkpoint.
file(REMOVE ${DISK}/filler)
fill(${room})
expect_failure("cac-train with no room for a checkpoint" ${DISK}/fresh/iter_2.pt
               ${TRAIN} ${CONFIG} --work-dir ${DISK}/fresh ${small})
same_bytes(${DISK}/fresh/config.yaml ${WORK}/good/config.yaml)
read_log(${DISK}/fresh/log.jsonl records)
if(NOT records STREQUAL "train:2")
  fail("the log of the failed run holds ${records}, expected train:2")
endif()
if(EXISTS ${DISK}/fresh/iter_2.pt OR EXISTS ${DISK}/fresh/latest.pt)
  fail("a failed checkpoint write left a checkpoint")
endif()
expect_no_temporaries(${DISK})

# 3. --resume of a run copied in (cp -a keeps latest.pt a hard link of iter_2.pt).
file(REMOVE_RECURSE ${DISK}/filler ${DISK}/full ${DISK}/fresh)
execute_process(COMMAND cp -a ${WORK}/good ${DISK}/resume RESULT_VARIABLE status)
fill(${room})
expect_failure("cac-train --resume with no room for a checkpoint" ${DISK}/resume/iter_4.pt
               ${TRAIN} ${CONFIG} --work-dir ${DISK}/resume ${small} --resume)
same_bytes(${DISK}/resume/latest.pt ${WORK}/good/latest.pt)
same_bytes(${DISK}/resume/iter_2.pt ${WORK}/good/iter_2.pt)
same_bytes(${DISK}/resume/config.yaml ${WORK}/good/config.yaml)
read_log(${DISK}/resume/log.jsonl records)
if(NOT records STREQUAL "train:2;train:4")
  fail("the log of the failed resume holds ${records}, expected train:2;train:4")
endif()
expect_no_temporaries(${DISK})
file(REMOVE ${DISK}/filler)
execute_process(COMMAND ${TRAIN} ${CONFIG} --work-dir ${DISK}/resume ${small} --resume
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT status EQUAL 0 OR NOT out MATCHES "final \\(iteration 6\\): mIoU")
  fail("--resume after freeing space failed (${status}):\n${out}\n${err}")
endif()
read_log(${DISK}/resume/log.jsonl records)
if(NOT records STREQUAL "train:2;train:4;train:6;val:6")
  fail("the log after the resumed run holds ${records}, expected train:2;train:4;train:6;val:6")
endif()
expect_no_temporaries(${DISK})

# 4. cac-eval --out on a full disk.
fill(0)
expect_failure("cac-eval --out on a full disk" ${DISK}/metrics.json
               ${EVAL} ${CONFIG} ${WORK}/good/latest.pt ${small} --out ${DISK}/metrics.json)
if(EXISTS ${DISK}/metrics.json OR last_out MATCHES "wrote ")
  fail("cac-eval left ${DISK}/metrics.json on a full disk")
endif()
expect_no_temporaries(${DISK})

execute_process(COMMAND umount ${DISK})
message(STATUS "1. full disk: config.yaml refused whole; 2. checkpoint: config.yaml and log intact; "
               "3. resume: previous checkpoint intact, finished after freeing space; 4. cac-eval --out refused")
