# surgeon_set_warnings(target): the project's warning set, applied to surgeon's own targets only
# (never propagated to consumers through the INTERFACE libraries).
function(surgeon_set_warnings target)
  set(cxx_flags -Wall -Wextra -Wpedantic -Wconversion -Wshadow)
  if(SURGEON_WARNINGS_AS_ERRORS)
    list(APPEND cxx_flags -Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${cxx_flags}>)
  # nvcc forwards host warnings to the host compiler; -Wpedantic and -Wconversion fire inside the
  # CUDA runtime headers, so the device side gets the subset that is clean there.
  set(cuda_host_flags -Wall,-Wextra,-Wshadow)
  if(SURGEON_WARNINGS_AS_ERRORS)
    set(cuda_host_flags ${cuda_host_flags},-Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${cuda_host_flags}>)
  if(SURGEON_WARNINGS_AS_ERRORS)
    # nvcc's own front-end warnings fail the build too, not only the host compiler's.
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
  endif()
endfunction()
