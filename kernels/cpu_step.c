/* One layer's streaming step around the attention, fused for the CPU: rotate the new queries and keys,
   write the new keys and values into a copy of the ring, and attend the held-back and new queries to the
   ring (as it lies, in slot order) and the new keys, for rows that all sit at one position.

   The same arithmetic as the PyTorch path (swa_stream/encoder.py `_step_inference`): the rotation is
   `x * cos + roll(x, D/2) * signed_sin` with each product and the sum rounded as torch rounds them (built
   with -ffp-contract=off), so the ring's keys are bitwise the PyTorch path's; the attention is the
   softmax of the scaled scores plus the additive mask, computed in float32 as SDPA's math is. A query row
   that sees no key returns zeros.

   Why it exists: inside a streaming step every small torch call costs 2-5 times what it costs alone,
   because the layer's 1 MB of weights has pushed the calls' code and data out of the core's L2 cache
   (benchmarks/step_floor.py). These loops replace about fifteen such calls per layer.

   Layouts (float32, contiguous; b row, t new position, h head, c ring slot):
     qkv   [B][T][3][H][D]  the input projection's output (q, k, v)
     cos_t, ssin [T][D]     rotate_full's tables for the new positions
     kr, vr [B][H][C][D]    the ring before the step (position p in slot p mod C)
     pq    [B][H][R][D]     the R held-back rotated queries (lookahead)
   ring_first and k_start are kernels/ring.py's `ring_placement` (the project's one home of the ring's slot
   arithmetic): the slot of the oldest ring position end - C, and the first index, in position order from
   end - C, that the stream wrote (keys before the stream's start are masked); the window is (C - R, R).
   Outputs: nk, nv [B][H][C][D] the ring after the step; npq [B][H][R][D] the new held-back queries;
            o [B][T][H][D] the attention outputs of queries end - R .. end - R + T - 1.
   Returns 0, or -1 if scratch memory could not be had.

   `swa_cpu_rotate` is the rotation alone, for a projection of any length (SWAAttention.project): qkv as
   above, q and k out as [B][H][T][D]. On a long run torch's elementwise calls walk the strided view of q
   and k 16 floats at a time and take a pass each; this is one pass, with the same roundings. It rotates
   positions t_first .. t_last - 1 of every row, so that callers can split a long run between threads. */

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row b's queries and keys of positions t_first .. t_last - 1, rotated, into oq, ok [H][T][D]:
   x * cos + (x's other half) * signed_sin. */
static void rotate_row(const float *row, const float *cos_t, const float *ssin, float *oq_all, float *ok_all,
                       int T, int H, int D, int t_first, int t_last)
{
    const int half = D / 2;
    const size_t hd = (size_t)H * D;
    for (int t = t_first; t < t_last; t++) {
        const float *c = cos_t + (size_t)t * D, *s = ssin + (size_t)t * D;
        for (int h = 0; h < H; h++) {
            const float *xq = row + (size_t)t * 3 * hd + (size_t)h * D, *xk = xq + hd;
            float *oq = oq_all + ((size_t)h * T + t) * D, *ok = ok_all + ((size_t)h * T + t) * D;
            for (int i = 0; i < half; i++) {  /* the partner of i is i + D/2, and of i + D/2 is i */
                oq[i] = xq[i] * c[i] + xq[i + half] * s[i];
                ok[i] = xk[i] * c[i] + xk[i + half] * s[i];
            }
            for (int i = half; i < D; i++) {
                oq[i] = xq[i] * c[i] + xq[i - half] * s[i];
                ok[i] = xk[i] * c[i] + xk[i - half] * s[i];
            }
        }
    }
}

void swa_cpu_rotate(const float *qkv, const float *cos_t, const float *ssin, float *q, float *k, int B, int T,
                    int H, int D, int t_first, int t_last)
{
    const size_t per_row = (size_t)H * T * D;
    if (!per_row)  /* nothing to rotate (and torch's data pointers may be NULL) */
        return;
    for (int b = 0; b < B; b++)
        rotate_row(qkv + (size_t)b * T * 3 * H * D, cos_t, ssin, q + b * per_row, k + b * per_row, T, H, D, t_first,
                   t_last);
}

int swa_cpu_step(const float *qkv, const float *cos_t, const float *ssin, const float *kr, const float *vr,
                 const float *pq, float *npq, float *nk, float *nv, float *o, int B, int T, int H, int D, int C,
                 int R, int ring_first, int k_start, float scale)
{
    const int K = C + T, keep = C < T ? C : T;
    const size_t hd = (size_t)H * D, ring = (size_t)H * C * D;
    float *scratch = malloc(sizeof(float) * ((size_t)2 * H * T * D + K));
    if (!scratch)
        return -1;
    float *qrot = scratch, *krot = scratch + (size_t)H * T * D, *p = scratch + (size_t)2 * H * T * D;
    for (int b = 0; b < B; b++) {
        const float *row = qkv + (size_t)b * T * 3 * hd;
        rotate_row(row, cos_t, ssin, qrot, krot, T, H, D, 0, T);
        if (ring) {  /* an empty ring has no storage (torch's data pointer is NULL then) */
            memcpy(nk + b * ring, kr + b * ring, ring * sizeof(float));
            memcpy(nv + b * ring, vr + b * ring, ring * sizeof(float));
        }
        for (int h = 0; h < H; h++)
            for (int t = T - keep; t < T; t++) {  /* position end + t: index C + t from end - C */
                const int slot = (ring_first + t) % C;
                const size_t at = b * ring + ((size_t)h * C + slot) * D;
                memcpy(nk + at, krot + ((size_t)h * T + t) * D, D * sizeof(float));
                memcpy(nv + at, row + (size_t)t * 3 * hd + 2 * hd + (size_t)h * D, D * sizeof(float));
            }
        for (int h = 0; h < H; h++) {
            const float *pqh = R ? pq + ((size_t)b * H + h) * R * D : NULL;
            const float *krh = C ? kr + b * ring + (size_t)h * C * D : NULL;
            const float *vrh = C ? vr + b * ring + (size_t)h * C * D : NULL;
            /* queries in order: the R held back, then the T new; the last R of them wait for the next step */
            for (int r = 0; r < R; r++) {
                const int q = T + r;
                const float *src = q < R ? pqh + (size_t)q * D : qrot + ((size_t)h * T + (q - R)) * D;
                memcpy(npq + (((size_t)b * H + h) * R + r) * D, src, D * sizeof(float));
            }
            for (int i = 0; i < T; i++) {
                const float *q = i < R ? pqh + (size_t)i * D : qrot + ((size_t)h * T + (i - R)) * D;
                float m = -INFINITY;
                int seen = 0;
                for (int k = 0; k < K; k++) {
                    /* key k's index in position order (positions end - C ..): a ring slot's is
                       (k - ring_first) mod C, a new key's C + its index; query i (position end - R + i)
                       sees indices i .. i + C from the stream's first (k_start) on */
                    const int at = k < C ? (k - ring_first + C) % C : k;
                    if (at < i || at > i + C || at < k_start) {
                        p[k] = -INFINITY;
                        continue;
                    }
                    const float *key = k < C ? krh + (size_t)k * D : krot + ((size_t)h * T + (k - C)) * D;
                    float acc = 0.f;
                    for (int e = 0; e < D; e++)
                        acc += q[e] * key[e];
                    p[k] = acc * scale;
                    seen++;
                    if (p[k] > m)
                        m = p[k];
                }
                float *out = o + (((size_t)b * T + i) * H + h) * D;
                for (int e = 0; e < D; e++)
                    out[e] = 0.f;
                if (!seen)  /* no visible key (a NaN score still propagates, as in torch) */
                    continue;
                float sum = 0.f;
                for (int k = 0; k < K; k++) {
                    p[k] = expf(p[k] - m);
                    sum += p[k];
                }
                const float inv = 1.f / sum;
                for (int k = 0; k < K; k++) {
                    const float *value = k < C ? vrh + (size_t)k * D
                                                : row + (size_t)(k - C) * 3 * hd + 2 * hd + (size_t)h * D;
                    const float w = p[k] * inv;
                    for (int e = 0; e < D; e++)
                        out[e] += w * value[e];
                }
            }
        }
    }
    free(scratch);
    return 0;
}
