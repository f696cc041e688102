/*
 * The family table (dispatch.h) and every kernel it points to. This is the only
 * translation unit that includes the kernel headers: setup.py compiles it alongside
 * the Cython module, in parallel, and links both into fastpw._kernels.
 */
#include "dispatch.h"
#include "f32/avx2.h"
#include "f32/avx512.h"
#include "f32/neon.h"
#include "f32/scalar.h"
#include "neon_common.h"
#include "q8/avx2.h"
#include "q8/avx512vnni.h"
#include "q8/neon.h"
#include "q8/neondot.h"
#include "q8/scalar.h"
#include "quant.h"
#include "x86_common.h"

const fpw_family fpw_families[] = {
#if FPW_X86_64
    /* int8 through vpdpbusd; float32 and quantize gain nothing over avx512's. */
    {.name = "avx512vnni", .required_features = FPW_AVX512VNNI_REQUIRES, .q8 = &fpw_q8_ukernel__avx512vnni},
    /* int8 has no 512-bit kernel without VNNI: avx2's vpmaddwd one serves. */
    {.name = "avx512",
     .required_features = FPW_AVX512_REQUIRES,
     .f32 = &fpw_f32_ukernel__avx512,
     .quant = &fpw_quant_ukernel__avx512},
    {.name = "avx2",
     .required_features = FPW_AVX2_REQUIRES,
     .f32 = &fpw_f32_ukernel__avx2,
     .q8 = &fpw_q8_ukernel__avx2,
     .quant = &fpw_quant_ukernel__avx2},
#endif
#if FPW_AARCH64
    /* Armv8.2 dot product: int8 only; float32 is neon's. */
    {.name = "neondot", .required_features = FPW_NEONDOT_REQUIRES, .q8 = &fpw_q8_ukernel__neondot},
    /* Every AArch64 CPU (Armv8.0). Quantize is the scalar row's portable loop, which the
     * compiler vectorises with NEON: a NEON row of its own would be the same code. */
    {.name = "neon",
     .required_features = FPW_NEON_REQUIRES,
     .f32 = &fpw_f32_ukernel__neon,
     .q8 = &fpw_q8_ukernel__neon},
#endif
    /* The reference kernels: every operation, every CPU. */
    {.name = "scalar",
     .required_features = 0,
     .f32 = &fpw_f32_ukernel__scalar,
     .q8 = &fpw_q8_ukernel__scalar,
     .quant = &fpw_quant_ukernel__portable},
};

const int fpw_num_families = (int)(sizeof(fpw_families) / sizeof(fpw_families[0]));
