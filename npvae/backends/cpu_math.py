"""exp, expm1 and log1p for the CPU kernels, in plain arithmetic that LLVM can vectorise.

numba's pip build has no vector math library (SVML): `math.exp` in a loop is a scalar libm call per
element (~3 ns in float32, ~11 ns in float64 here, log1p ~10 ns), and the Bernoulli head and the
tanh layers spend most of a step there. These versions are branch-free (selects only), so the
element loops around them compile to AVX2 code. Accuracy, checked against long double in the
tests: within 2 ulp in float32 and float64 over the ranges the kernels use.

`scalar.py` calls the stubs `exp_neg`, `expm1_neg`, `log1p_unit` (pure Python, `math.*`); the
overloads here give their CPU implementation, and a CUDA backend would register its own (e.g. the
hardware `math.exp`), so the formulas in scalar.py stay written once.

Method (Cody & Waite; Tang 1989): u = k ln2 + r, |r| <= ln2/2, with k = round(u / ln2) from the
"magic number" rounding (u / ln2 + 1.5 2^52 holds k in its low mantissa bits), ln2 split in two so
k ln2_hi is exact; expm1(r) by its Taylor series to below an ulp; 2^k built in the exponent bits.
log1p(e), e in [0, 1]: 2 atanh(g / (2 + g)) with g = e, or g = (e - 1)/2 plus ln 2 when e > sqrt 2 - 1.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._jit import jit
from ..maths.scalar import exp_neg, expm1_neg, log1p_unit


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float32/float64 as int32/int64."""
    itype = {types.float32: types.int32, types.float64: types.int64}.get(x)
    if itype is None:
        return None
    return itype(x), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(itype.bitwidth))


@intrinsic
def _pow2(typingctx, k, x):
    """2^k in the float type of x, for an integer k with 2^k normal: (k + bias) << mantissa bits, as a float."""
    if x not in (types.float32, types.float64) or not isinstance(k, types.Integer):
        return None
    width, mant, bias = (32, 23, 127) if x == types.float32 else (64, 52, 1023)

    def codegen(context, builder, sig, args):
        it = ir.IntType(width)
        kk = args[0]
        kk = builder.trunc(kk, it) if kk.type.width > width else (builder.sext(kk, it) if kk.type.width < width else kk)
        e = builder.shl(builder.add(kk, ir.Constant(it, bias)), ir.Constant(it, mant))
        return builder.bitcast(e, ir.FloatType() if width == 32 else ir.DoubleType())

    return x(k, x), codegen


def _consts(t, magic, lo_exp, lo_expm1, ln2_hi, ln2_lo):
    return dict(MAGIC=t(magic), MAGIC_BITS=np.array(t(magic)).view(np.int32 if t is np.float32 else np.int64).item(),
                LO_EXP=t(lo_exp), LO_EXPM1=t(lo_expm1), LN2_HI=t(ln2_hi), LN2_LO=t(ln2_lo), INV_LN2=t(1 / math.log(2)),
                ONE=t(1), TWO=t(2), HALF=t(0.5), ZERO=t(0), LN2=t(math.log(2)), SQRT2_M1=t(math.sqrt(2) - 1))


# float64: ln2_hi has 32 significant bits (fdlibm), so k ln2_hi is exact for |k| < 2^21.
D = _consts(np.float64, 1.5 * 2.0**52, -1100.0, -50.0, 6.93147180369123816490e-01, 1.90821492927058770002e-10)
# float32: ln2_hi = 355/512 (9 bits, Cephes' expf).
S = _consts(np.float32, 1.5 * 2.0**23, -110.0, -20.0, 0.693359375, -2.12194440e-4)
_F = [1.0 / math.factorial(i) for i in range(14)]  # Taylor coefficients of exp
D_E = tuple(np.float64(c) for c in _F)
S_E = tuple(np.float32(c) for c in _F)
D_L = tuple(np.float64(2.0 / (2 * i + 1)) for i in range(12))  # 2 atanh(y) = sum 2 y^(2i+1) / (2i+1)
S_L = tuple(np.float32(2.0 / (2 * i + 1)) for i in range(12))


@jit(fastmath={"contract"})
def _expm1_poly64(r):
    """expm1(r) for |r| <= ln2/2, Taylor to degree 13 (truncation < 1e-17 relative)."""
    c = D_E
    p = c[13] * r + c[12]
    p = ((((((((((p * r + c[11]) * r + c[10]) * r + c[9]) * r + c[8]) * r + c[7]) * r + c[6]) * r + c[5]) * r + c[4]) * r + c[3]) * r + c[2])
    return r + r * r * p


@jit(fastmath={"contract"})
def _expm1_poly32(r):
    """expm1(r) for |r| <= ln2/2 in float32, Taylor to degree 7 (truncation < 5e-9 relative)."""
    c = S_E
    p = ((((c[7] * r + c[6]) * r + c[5]) * r + c[4]) * r + c[3]) * r + c[2]
    return r + r * r * p


@jit(fastmath={"contract"})
def _atanh_poly64(y, y2):
    """2 atanh(y) for |y| <= 0.172: 10 terms (truncation < 3e-17 relative)."""
    c = D_L
    p = ((((((((c[10] * y2 + c[9]) * y2 + c[8]) * y2 + c[7]) * y2 + c[6]) * y2 + c[5]) * y2 + c[4]) * y2 + c[3]) * y2 + c[2]) * y2 + c[1]
    return c[0] * y + y * y2 * p


@jit(fastmath={"contract"})
def _atanh_poly32(y, y2):
    """2 atanh(y) for |y| <= 0.172 in float32: 5 terms (truncation < 3e-9 relative)."""
    c = S_L
    p = (((c[5] * y2 + c[4]) * y2 + c[3]) * y2 + c[2]) * y2 + c[1]
    return c[0] * y + y * y2 * p


def _make(C, expm1_poly, atanh_poly):
    MAGIC, MAGIC_BITS, INV_LN2, LN2_HI, LN2_LO = C["MAGIC"], C["MAGIC_BITS"], C["INV_LN2"], C["LN2_HI"], C["LN2_LO"]
    LO_EXP, LO_EXPM1, ONE, TWO, HALF, ZERO, LN2, SQRT2_M1 = (C[n] for n in ("LO_EXP", "LO_EXPM1", "ONE", "TWO", "HALF", "ZERO", "LN2", "SQRT2_M1"))

    @jit(fastmath={"contract"})
    def reduce(u, lo):
        """u = k ln2 + r; u is clamped below at lo (a NaN stays NaN), so -inf gives e^lo = 0 and k stays small."""
        u = lo if u < lo else u
        t = u * INV_LN2 + MAGIC
        k = t - MAGIC
        return (u - k * LN2_HI) - k * LN2_LO, _bits(t) - MAGIC_BITS

    @jit(fastmath={"contract"})
    def exp(u):
        r, k = reduce(u, LO_EXP)
        k1 = k >> 1  # 2^k as 2^k1 2^(k - k1): each factor normal, the product rounds once into the subnormals
        return (ONE + expm1_poly(r)) * _pow2(k1, r) * _pow2(k - k1, r)

    @jit(fastmath={"contract"})
    def expm1(u):
        r, k = reduce(u, LO_EXPM1)
        s = _pow2(k, r)
        return s * expm1_poly(r) + (s - ONE)  # 2^k (1 + q) - 1 without losing q when k = 0

    @jit(fastmath={"contract"})
    def log1p(e):
        big = e > SQRT2_M1
        g = (e - ONE) * HALF if big else e  # 1 + e = 2 (1 + g)
        y = g / (TWO + g)
        return (LN2 if big else ZERO) + atanh_poly(y, y * y)

    return exp, expm1, log1p


_exp64, _expm1_64, _log1p64 = _make(D, _expm1_poly64, _atanh_poly64)
_exp32, _expm1_32, _log1p32 = _make(S, _expm1_poly32, _atanh_poly32)


def _by_type(f32, f64):
    def typer(u):
        if u == types.float32:
            return lambda u: f32(u)
        if u == types.float64:
            return lambda u: f64(u)
        return None

    return typer


overload(exp_neg, target="cpu", inline="always")(_by_type(_exp32, _exp64))
overload(expm1_neg, target="cpu", inline="always")(_by_type(_expm1_32, _expm1_64))
overload(log1p_unit, target="cpu", inline="always")(_by_type(_log1p32, _log1p64))
