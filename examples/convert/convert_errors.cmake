# cac-convert loses nothing and writes nothing when it fails (issue 14): --strict with a model that
# does not match exits 1 without writing OUT (an existing OUT is kept byte for byte), OUT equal to
# IN is refused before anything is read, a write into a missing directory exits 2 naming the file,
# and no OUT.tmp is ever left behind. Invoked with -DCONVERT= -DFIXTURE= -DWORK=.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/sub)
set(in ${WORK}/in.pth)
file(COPY_FILE ${FIXTURE} ${in})
file(SHA256 ${in} in_hash)

function(convert expected_status)
  execute_process(COMMAND ${CONVERT} ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT status STREQUAL expected_status)
    message(FATAL_ERROR "cac-convert ${ARGN}: expected exit ${expected_status} but got ${status}\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
endfunction()

function(expect_match text pattern what)
  if(NOT text MATCHES "${pattern}")
    message(FATAL_ERROR "${what}: expected a message matching '${pattern}' but got:\n${text}")
  endif()
endfunction()

# 1. --strict and a model that does not match: exit 1, nothing written.
convert(1 ${in} ${WORK}/strict.pth --from mmseg --model fcn_tiny --num-classes 6 --strict)
expect_match("${err}" "cac-convert: --strict: the checkpoint does not match fcn_tiny \\(see the report above\\); nothing written to [^\n]*strict.pth" "--strict")
file(GLOB strict_temporaries ${WORK}/strict.pth.tmp*)
if(EXISTS ${WORK}/strict.pth OR strict_temporaries)
  message(FATAL_ERROR "cac-convert --strict failed but wrote ${WORK}/strict.pth (or its .tmp)")
endif()

# 2. The same over an existing OUT: the old file is kept byte for byte.
file(WRITE ${WORK}/kept.pth "an earlier conversion")
convert(1 ${in} ${WORK}/kept.pth --from mmseg --model fcn_tiny --num-classes 6 --strict)
file(READ ${WORK}/kept.pth kept)
if(NOT kept STREQUAL "an earlier conversion")
  message(FATAL_ERROR "cac-convert --strict failed but changed the existing OUT: '${kept}'")
endif()

# 3. OUT is IN, spelt the same or differently: refused, the input untouched.
convert(2 ${in} ${in} --from mmseg)
expect_match("${err}" "cac-convert: OUT [^\n]* is the input checkpoint [^\n]*in.pth; write the converted checkpoint to another path" "OUT = IN")
convert(2 ${in} ${WORK}/sub/../in.pth --from mmseg)
expect_match("${err}" "is the input checkpoint" "OUT = IN via sub/..")
file(SHA256 ${in} hash_after)
if(NOT hash_after STREQUAL in_hash)
  message(FATAL_ERROR "cac-convert changed its input ${in}")
endif()

# 4. OUT in a directory that does not exist: exit 2 naming the file, nothing created.
convert(2 ${in} ${WORK}/missing/out.pth --from mmseg)
expect_match("${err}" "cac-convert: cac::io::write_state_dict: cannot open [^\n]*missing/out.pth.tmp[.0-9]* for writing" "missing directory")
if(EXISTS ${WORK}/missing)
  message(FATAL_ERROR "cac-convert created ${WORK}/missing")
endif()

# 5. --strict without --model has nothing to check: a command-line error, nothing written.
execute_process(COMMAND ${CONVERT} ${in} ${WORK}/nomodel.pth --strict RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(status EQUAL 0 OR EXISTS ${WORK}/nomodel.pth)
  message(FATAL_ERROR "cac-convert --strict without --model: expected a command-line error, got ${status}\n${out}\n${err}")
endif()
expect_match("${out}${err}" "--strict requires --model" "--strict without --model")

# 6. A successful conversion writes OUT by renaming its temporary: OUT exists, no .tmp remains,
#    and it reads back with the same number of tensors.
convert(0 ${in} ${WORK}/ok.pth --from mmseg)
expect_match("${out}" "read 26 tensors from [^\n]*in.pth \\(mmseg\\), 26 after conversion" "conversion")
expect_match("${out}" "\nwrote [^\n]*ok.pth\n" "conversion")
convert(0 ${WORK}/ok.pth ${WORK}/again.pth --from backbone)
expect_match("${out}" "read 26 tensors from [^\n]*ok.pth" "read back")
file(GLOB leftovers ${WORK}/*.tmp* ${WORK}/sub/*)
if(leftovers)
  message(FATAL_ERROR "cac-convert left temporaries behind: ${leftovers}")
endif()
message(STATUS "cac-convert errors: ok")
