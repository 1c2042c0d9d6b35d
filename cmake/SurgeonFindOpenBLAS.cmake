# Locates OpenBLAS (CBLAS) and LAPACKE and defines the imported target surgeon::openblas.
# Used by surgeon's own build and by the installed surgeon-config.cmake, so that consumers resolve
# the same libraries. Sets SURGEON_OPENBLAS_FOUND.
if(TARGET surgeon::openblas)
  set(SURGEON_OPENBLAS_FOUND TRUE)
  return()
endif()
find_path(SURGEON_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas-pthread openblas x86_64-linux-gnu/openblas-pthread)
find_path(SURGEON_LAPACKE_INCLUDE_DIR lapacke.h)
find_library(SURGEON_OPENBLAS_LIBRARY NAMES openblas)
find_library(SURGEON_LAPACKE_LIBRARY NAMES lapacke)
if(SURGEON_CBLAS_INCLUDE_DIR AND SURGEON_LAPACKE_INCLUDE_DIR AND SURGEON_OPENBLAS_LIBRARY AND SURGEON_LAPACKE_LIBRARY)
  add_library(surgeon::openblas INTERFACE IMPORTED)
  set_target_properties(surgeon::openblas PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${SURGEON_CBLAS_INCLUDE_DIR};${SURGEON_LAPACKE_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${SURGEON_LAPACKE_LIBRARY};${SURGEON_OPENBLAS_LIBRARY}")
  set(SURGEON_OPENBLAS_FOUND TRUE)
else()
  set(SURGEON_OPENBLAS_FOUND FALSE)
endif()
mark_as_advanced(SURGEON_CBLAS_INCLUDE_DIR SURGEON_LAPACKE_INCLUDE_DIR SURGEON_OPENBLAS_LIBRARY SURGEON_LAPACKE_LIBRARY)
