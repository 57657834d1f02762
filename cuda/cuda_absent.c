/* Built instead of the CUDA backend when prunelm is configured without CUDA, so callers can ask
 * for it and get a clear answer. */
#include <stdio.h>

#include "core/backend.h"

int plm_cuda_available(char *why, size_t why_len)
{
    if (why && why_len) snprintf(why, why_len, "this build of prunelm has no CUDA backend "
                                 "(configure with -DPLM_CUDA=ON where the CUDA toolkit is installed)");
    return 0;
}

plm_status plm_backend_cuda_new(int device, plm_backend **out, plm_error *err)
{
    *out = NULL;
    char why[256];
    plm_cuda_available(why, sizeof why);
    return plm_fail(err, PLM_E_DEVICE, "%s", why);
}
