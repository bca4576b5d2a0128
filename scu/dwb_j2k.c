/* JPEG 2000 frame decoding with OpenJPEG (dwb_j2k.h): the codestream is read from memory, its header checked
 * against the data set's geometry before anything is decoded, and the components written interleaved. */
#include "dwb_j2k.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <openjpeg.h>

typedef struct {
    const unsigned char *p;
    size_t n, at;
} mem_stream;

static OPJ_SIZE_T mem_read(void *buf, OPJ_SIZE_T nb, void *user) {
    mem_stream *m = user;
    if (m->at >= m->n) return (OPJ_SIZE_T)-1;
    size_t k = m->n - m->at < nb ? m->n - m->at : nb;
    memcpy(buf, m->p + m->at, k);
    m->at += k;
    return k;
}

static OPJ_OFF_T mem_skip(OPJ_OFF_T nb, void *user) {
    mem_stream *m = user;
    if (nb < 0) {
        if ((size_t)-nb > m->at) return -1;
        m->at -= (size_t)-nb;
        return nb;
    }
    size_t left = m->n - m->at;
    size_t k = (uint64_t)nb > left ? left : (size_t)nb;
    m->at += k;
    return (OPJ_OFF_T)k;
}

static OPJ_BOOL mem_seek(OPJ_OFF_T at, void *user) {
    mem_stream *m = user;
    if (at < 0 || (uint64_t)at > m->n) return OPJ_FALSE;
    m->at = (size_t)at;
    return OPJ_TRUE;
}

/* OpenJPEG's first error message, for the reason a person reads. */
typedef struct {
    char text[200];
} opj_msg;

static void on_error(const char *msg, void *user) {
    opj_msg *e = user;
    if (e->text[0]) return;
    size_t k = strlen(msg);
    while (k && (msg[k - 1] == '\n' || msg[k - 1] == '\r')) k--;
    if (k >= sizeof e->text) k = sizeof e->text - 1;
    memcpy(e->text, msg, k);
    e->text[k] = 0;
}

static void on_quiet(const char *msg, void *user) {
    (void)msg;
    (void)user;
}

size_t dwb_j2k_frame_bytes(const dwb_j2k_frame *f) {
    if (!f || !f->rows || !f->cols || !f->samples || (f->bits_allocated != 8 && f->bits_allocated != 16)) return 0;
    uint64_t n = (uint64_t)f->rows * f->cols * f->samples * (f->bits_allocated / 8);
    if (n > SIZE_MAX) return 0;
    return (size_t)n;
}

static const unsigned char kJp2Signature[] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The codestream inside a JP2 file: the contents of its jp2c box (top-level boxes walked), NULL if none. */
static const unsigned char *jp2_codestream(const unsigned char *p, size_t n, size_t *len) {
    size_t at = 0;
    while (n - at >= 8) {
        uint64_t size = be32(p + at), head = 8;
        if (size == 1) {
            if (n - at < 16) return NULL;
            size = (uint64_t)be32(p + at + 8) << 32 | be32(p + at + 12);
            head = 16;
        } else if (size == 0) {
            size = n - at;
        }
        if (size < head || size > n - at) return NULL;
        if (memcmp(p + at + 4, "jp2c", 4) == 0) {
            *len = (size_t)(size - head);
            return p + at + head;
        }
        at += (size_t)size;
    }
    return NULL;
}

/* The SIZ marker segment checked against the data set before OpenJPEG reads the header: OpenJPEG allocates for
 * every tile the SIZ declares (a hostile one declares millions) before the image size can be compared. */
static dwb_status check_siz(const unsigned char *cs, size_t n, const dwb_j2k_frame *f, dwb_error *err) {
    if (n < 42 || cs[0] != 0xFF || cs[1] != 0x4F || cs[2] != 0xFF || cs[3] != 0x51)
        return dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 header unreadable: no SOC and SIZ at the start");
    const unsigned char *siz = cs + 6; /* after SOC, the SIZ marker and Lsiz */
    uint32_t x = be32(siz + 2), y = be32(siz + 6), x0 = be32(siz + 10), y0 = be32(siz + 14);
    uint32_t tw = be32(siz + 18), th = be32(siz + 22), tx0 = be32(siz + 26), ty0 = be32(siz + 30);
    unsigned comps = (unsigned)cs[6 + 34] << 8 | cs[6 + 35];
    if (x <= x0 || y <= y0 || x - x0 != f->cols || y - y0 != f->rows || comps != f->samples)
        return dwb_error_set(err, DWB_E_PARSE,
                             "JPEG 2000 codestream is %ux%u with %u components, the data set says %ux%u with %u samples",
                             x > x0 ? x - x0 : 0, y > y0 ? y - y0 : 0, comps, f->cols, f->rows, f->samples);
    if (!tw || !th || tx0 > x0 || ty0 > y0)
        return dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 tiling %ux%u at %u,%u is invalid", tw, th, tx0, ty0);
    uint64_t tiles = ((uint64_t)(x - tx0) + tw - 1) / tw * (((uint64_t)(y - ty0) + th - 1) / th);
    if (tiles > (uint64_t)f->rows * f->cols || tiles > 65535)
        return dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 codestream declares %llu tiles for %ux%u pixels",
                             (unsigned long long)tiles, f->cols, f->rows);
    return DWB_OK;
}

dwb_status dwb_j2k_decode_frame(const unsigned char *cs, size_t n, const dwb_j2k_frame *f, unsigned char *out,
                                size_t out_len, int *transformed, dwb_error *err) {
    if (transformed) *transformed = 0;
    if (!f || (f->bits_allocated != 8 && f->bits_allocated != 16))
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "JPEG 2000 with Bits Allocated %u is not decoded here",
                             f ? f->bits_allocated : 0);
    if (f->samples != 1 && f->samples != 3)
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "JPEG 2000 with %u samples per pixel is not decoded here",
                             f->samples);
    uint64_t want = (uint64_t)f->rows * f->cols * f->samples * (f->bits_allocated / 8);
    if (!f->rows || !f->cols) return dwb_error_set(err, DWB_E_PARSE, "a JPEG 2000 frame of %ux%u", f->rows, f->cols);
    if (want > DWB_J2K_MAX_FRAME_BYTES)
        return dwb_error_set(err, DWB_E_LIMIT, "a JPEG 2000 frame of %ux%ux%u at %u bits is %llu bytes, above %zu",
                             f->rows, f->cols, f->samples, f->bits_allocated, (unsigned long long)want,
                             (size_t)DWB_J2K_MAX_FRAME_BYTES);
    if (!out || out_len != want)
        return dwb_error_set(err, DWB_E_INVALID, "JPEG 2000 output buffer of %zu bytes for a %llu-byte frame",
                             out_len, (unsigned long long)want);
    if (!cs || n < 2) return dwb_error_set(err, DWB_E_PARSE, "empty JPEG 2000 codestream");

    int jp2 = n >= sizeof kJp2Signature && memcmp(cs, kJp2Signature, sizeof kJp2Signature) == 0;
    size_t cs_len = n;
    const unsigned char *stream_start = jp2 ? jp2_codestream(cs, n, &cs_len) : cs;
    if (!stream_start)
        return dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 header unreadable: a JP2 file without a codestream");
    dwb_status checked = check_siz(stream_start, cs_len, f, err);
    if (checked != DWB_OK) return checked;

    mem_stream m = {cs, n, 0};
    opj_msg msg = {{0}};
    dwb_status st = DWB_OK;
    opj_image_t *img = NULL;
    opj_codec_t *codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    opj_stream_t *stream = opj_stream_create(n < 65536 ? n : 65536, OPJ_TRUE);
    if (!codec || !stream) {
        st = dwb_error_set(err, DWB_E_NOMEM, "cannot create an OpenJPEG decoder");
        goto done;
    }
    opj_stream_set_user_data(stream, &m, NULL);
    opj_stream_set_user_data_length(stream, n);
    opj_stream_set_read_function(stream, mem_read);
    opj_stream_set_skip_function(stream, mem_skip);
    opj_stream_set_seek_function(stream, mem_seek);
    opj_set_error_handler(codec, on_error, &msg);
    opj_set_warning_handler(codec, on_quiet, NULL);
    opj_set_info_handler(codec, on_quiet, NULL);
    opj_dparameters_t params;
    opj_set_default_decoder_parameters(&params);
    /* A truncated codestream fails instead of giving the part that is there. */
    if (!opj_setup_decoder(codec, &params) || !opj_decoder_set_strict_mode(codec, OPJ_TRUE)) {
        st = dwb_error_set(err, DWB_E_INTERNAL, "cannot set up the OpenJPEG decoder");
        goto done;
    }
    if (!opj_read_header(stream, codec, &img) || !img) {
        st = dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 header unreadable: %s", msg.text[0] ? msg.text : "no codestream");
        goto done;
    }
    if (img->x1 <= img->x0 || img->y1 <= img->y0 || img->x1 - img->x0 != f->cols || img->y1 - img->y0 != f->rows ||
        img->numcomps != f->samples) {
        st = dwb_error_set(err, DWB_E_PARSE,
                           "JPEG 2000 codestream is %ux%u with %u components, the data set says %ux%u with %u samples",
                           img->x1 - img->x0, img->y1 - img->y0, img->numcomps, f->cols, f->rows, f->samples);
        goto done;
    }
    for (unsigned c = 0; c < img->numcomps; c++) {
        const opj_image_comp_t *k = &img->comps[c];
        if (k->dx != 1 || k->dy != 1) {
            st = dwb_error_set(err, DWB_E_UNSUPPORTED, "JPEG 2000 component %u is subsampled (%ux%u)", c, k->dx, k->dy);
            goto done;
        }
        if (k->prec < 1 || k->prec > f->bits_allocated) {
            st = dwb_error_set(err, DWB_E_UNSUPPORTED, "JPEG 2000 component %u has %u bits, Bits Allocated is %u", c,
                               k->prec, f->bits_allocated);
            goto done;
        }
    }
    opj_codestream_info_v2_t *info = opj_get_cstr_info(codec);
    int mct = info && info->m_default_tile_info.mct;
    opj_destroy_cstr_info(&info);
    if (!opj_decode(codec, stream, img) || !opj_end_decompress(codec, stream)) {
        st = dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 codestream corrupt: %s", msg.text[0] ? msg.text : "decoding failed");
        goto done;
    }
    /* A JP2 box may change the components while decoding (a palette expanded, channels redefined): the header's
     * checks are made again on what was decoded. */
    if (img->numcomps != f->samples) {
        st = dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 decoded to %u components, the data set says %u samples",
                           img->numcomps, f->samples);
        goto done;
    }
    for (unsigned c = 0; c < img->numcomps; c++) {
        const opj_image_comp_t *k = &img->comps[c];
        if (k->dx != 1 || k->dy != 1 || k->prec < 1 || k->prec > f->bits_allocated) {
            st = dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 component %u decoded to %u bits, subsampled %ux%u", c,
                               k->prec, k->dx, k->dy);
            goto done;
        }
        if (!k->data || k->w != f->cols || k->h != f->rows) {
            st = dwb_error_set(err, DWB_E_PARSE, "JPEG 2000 component %u decoded to %ux%u, not %ux%u", c, k->w, k->h,
                               f->cols, f->rows);
            goto done;
        }
    }
    size_t px = (size_t)f->rows * f->cols;
    for (unsigned c = 0; c < img->numcomps; c++) {
        const opj_image_comp_t *k = &img->comps[c];
        /* Lossy decoding can overshoot the component's range: clamp as the precision allows. */
        int64_t lo = k->sgnd ? -((int64_t)1 << (k->prec - 1)) : 0;
        int64_t hi = k->sgnd ? ((int64_t)1 << (k->prec - 1)) - 1 : ((int64_t)1 << k->prec) - 1;
        const OPJ_INT32 *src = k->data;
        if (f->bits_allocated == 8) {
            unsigned char *d = out + c;
            for (size_t i = 0; i < px; i++, d += f->samples) {
                int64_t v = src[i] < lo ? lo : src[i] > hi ? hi : src[i];
                *d = (unsigned char)(uint8_t)v;
            }
        } else {
            unsigned char *d = out + 2 * c;
            size_t step = 2 * (size_t)f->samples;
            for (size_t i = 0; i < px; i++, d += step) {
                int64_t v = src[i] < lo ? lo : src[i] > hi ? hi : src[i];
                uint16_t u = (uint16_t)v;
                d[0] = (unsigned char)(u & 0xFF);
                d[1] = (unsigned char)(u >> 8);
            }
        }
    }
    if (transformed) *transformed = mct;

done:
    if (img) opj_image_destroy(img);
    if (stream) opj_stream_destroy(stream);
    if (codec) opj_destroy_codec(codec);
    return st;
}
