# Writes the man page of `bptt` or of one of its commands with help2man, from the program's own
# --help; a command's NAME line is its line in `bptt --help`.
#   cmake -DHELP2MAN=... -DBPTT=path/to/bptt -DSUBCOMMAND=train|"" -DVERSION=0.2.0 -DOUT=file -P man-page.cmake
if(SUBCOMMAND STREQUAL "")
  set(program "${BPTT}")
  set(name "train, sample, evaluate and inspect recurrent models trained by backpropagation through time")
else()
  set(program "${BPTT} ${SUBCOMMAND}")
  execute_process(COMMAND "${BPTT}" --help OUTPUT_VARIABLE commands RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${BPTT} --help failed")
  endif()
  string(REGEX MATCH "\n  ${SUBCOMMAND} +([^\n]*)" line "${commands}")
  if(NOT line)
    message(FATAL_ERROR "bptt --help does not list the command ${SUBCOMMAND}")
  endif()
  set(name "${CMAKE_MATCH_1}")
endif()
execute_process(COMMAND "${HELP2MAN}" --no-info --version-string=${VERSION} --name=${name}
                        --output=${OUT} "${program}"
                RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "help2man failed for '${program}'")
endif()
