/* audio_decode.c - any file FFmpeg reads -> 16 kHz mono float PCM.
 *
 * Mirrors `ffmpeg -nostdin -i FILE -f s16le -ac 1 -ar 16000 -`: the best
 * audio stream is decoded, converted by libswresample with its default
 * options to mono s16 at 16 kHz, then divided by 32768 as the reference
 * does, so the samples are identical to the reference's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>

#include "common/error.h"

/* Refuse more than 24 hours of audio: beyond that the float buffer alone
 * passes 5 GB, which is a mistake rather than a transcription job. */
#define MAX_SAMPLES ((size_t)SHRUTI_SAMPLE_RATE * 3600 * 24)

typedef struct {
    int16_t *s16;
    size_t n, cap;
} pcm_buffer;

static int pcm_reserve(pcm_buffer *b, size_t more) {
    if (more > MAX_SAMPLES - b->n) return SHRUTI_ERR_AUDIO;
    if (b->n + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 16000;
    while (cap < b->n + more) cap *= 2;
    int16_t *p = realloc(b->s16, cap * sizeof *p);
    if (!p) return SHRUTI_ERR_NOMEM;
    b->s16 = p;
    b->cap = cap;
    return 0;
}

typedef struct {
    const uint8_t *data;
    size_t size, pos;
} memory_source;

static int memory_read(void *opaque, uint8_t *buf, int n) {
    memory_source *m = opaque;
    size_t left = m->size - m->pos;
    if (left == 0) return AVERROR_EOF;
    if ((size_t)n > left) n = (int)left;
    memcpy(buf, m->data + m->pos, (size_t)n);
    m->pos += (size_t)n;
    return n;
}

static int64_t memory_seek(void *opaque, int64_t offset, int whence) {
    memory_source *m = opaque;
    whence &= ~AVSEEK_FORCE;
    if (whence == AVSEEK_SIZE) return (int64_t)m->size;
    int64_t base = whence == SEEK_CUR ? (int64_t)m->pos : whence == SEEK_END ? (int64_t)m->size : 0;
    int64_t p = base + offset;
    if (p < 0 || p > (int64_t)m->size) return AVERROR(EINVAL);
    m->pos = (size_t)p;
    return p;
}

typedef struct {
    AVFormatContext *fmt;
    AVIOContext *avio;
    AVCodecContext *dec;
    SwrContext *swr;
    AVPacket *pkt;
    AVFrame *frame;
    int stream;
    pcm_buffer out;
} decoder;

static int av_fail(shruti_error *err, int code, const char *what, int averr) {
    char buf[AV_ERROR_MAX_STRING_SIZE] = "";
    av_strerror(averr, buf, sizeof buf);
    return sh_error(err, code, "%s: %s", what, buf);
}

static int open_converter(decoder *d, shruti_error *err) {
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    AVChannelLayout in_layout;
    if (d->dec->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || d->dec->ch_layout.nb_channels == 0)
        av_channel_layout_default(&in_layout, d->dec->ch_layout.nb_channels > 0
                                                  ? d->dec->ch_layout.nb_channels : 1);
    else if (av_channel_layout_copy(&in_layout, &d->dec->ch_layout) < 0)
        return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    int r = swr_alloc_set_opts2(&d->swr, &mono, AV_SAMPLE_FMT_S16, SHRUTI_SAMPLE_RATE,
                                &in_layout, d->dec->sample_fmt, d->dec->sample_rate, 0, NULL);
    av_channel_layout_uninit(&in_layout);
    if (r < 0 || (r = swr_init(d->swr)) < 0)
        return av_fail(err, SHRUTI_ERR_AUDIO, "cannot set up resampling", r);
    return 0;
}

/* Converts one decoded frame (or flushes the resampler when frame is NULL). */
static int convert(decoder *d, const AVFrame *frame, shruti_error *err) {
    int in_n = frame ? frame->nb_samples : 0;
    int out_n = swr_get_out_samples(d->swr, in_n);
    if (out_n < 0) return av_fail(err, SHRUTI_ERR_AUDIO, "resampling failed", out_n);
    if (out_n == 0) return 0;
    int r = pcm_reserve(&d->out, (size_t)out_n);
    if (r == SHRUTI_ERR_NOMEM) return sh_error(err, r, "out of memory decoding audio");
    if (r < 0) return sh_error(err, r, "audio is longer than 24 hours");
    uint8_t *dst = (uint8_t *)(d->out.s16 + d->out.n);
    int got = swr_convert(d->swr, &dst, out_n, frame ? (const uint8_t **)frame->extended_data : NULL,
                          in_n);
    if (got < 0) return av_fail(err, SHRUTI_ERR_AUDIO, "resampling failed", got);
    d->out.n += (size_t)got;
    return 0;
}

static int drain_decoder(decoder *d, shruti_error *err) {
    for (;;) {
        int r = avcodec_receive_frame(d->dec, d->frame);
        if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return 0;
        if (r < 0) return av_fail(err, SHRUTI_ERR_AUDIO, "cannot decode audio", r);
        if (!d->swr && (r = open_converter(d, err)) < 0) return r;
        r = convert(d, d->frame, err);
        av_frame_unref(d->frame);
        if (r < 0) return r;
    }
}

static int open_input(decoder *d, const char *path, memory_source *mem, shruti_error *err) {
    int r;
    if (mem) {
        const size_t buf_size = 65536;
        uint8_t *buf = av_malloc(buf_size);
        d->fmt = avformat_alloc_context();
        if (!buf || !d->fmt) {
            av_free(buf);
            return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
        }
        d->avio = avio_alloc_context(buf, (int)buf_size, 0, mem, memory_read, NULL, memory_seek);
        if (!d->avio) {
            av_free(buf);
            return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
        }
        d->fmt->pb = d->avio;
        path = "";
    } else if (strcmp(path, "-") == 0) {
        path = "pipe:0";
    }
    if ((r = avformat_open_input(&d->fmt, path, NULL, NULL)) < 0) {
        if (r == AVERROR(ENOENT) || r == AVERROR(EACCES) || r == AVERROR(EISDIR))
            return av_fail(err, SHRUTI_ERR_IO, "cannot open input", r);
        return av_fail(err, SHRUTI_ERR_AUDIO, "not a readable audio or video file", r);
    }
    if ((r = avformat_find_stream_info(d->fmt, NULL)) < 0)
        return av_fail(err, SHRUTI_ERR_AUDIO, "cannot read stream information", r);
    const AVCodec *codec = NULL;
    d->stream = av_find_best_stream(d->fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
    if (d->stream < 0 || !codec)
        return sh_error(err, SHRUTI_ERR_AUDIO, "the input has no decodable audio stream");
    d->dec = avcodec_alloc_context3(codec);
    if (!d->dec) return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    if ((r = avcodec_parameters_to_context(d->dec, d->fmt->streams[d->stream]->codecpar)) < 0 ||
        (r = avcodec_open2(d->dec, codec, NULL)) < 0)
        return av_fail(err, SHRUTI_ERR_AUDIO, "cannot open the audio decoder", r);
    if (d->dec->sample_rate <= 0 || d->dec->sample_rate > 1536000)
        return sh_error(err, SHRUTI_ERR_AUDIO, "bad sample rate %d", d->dec->sample_rate);
    return 0;
}

static int decode_all(decoder *d, shruti_error *err) {
    int r;
    d->pkt = av_packet_alloc();
    d->frame = av_frame_alloc();
    if (!d->pkt || !d->frame) return sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
    while ((r = av_read_frame(d->fmt, d->pkt)) >= 0) {
        if (d->pkt->stream_index == d->stream) {
            r = avcodec_send_packet(d->dec, d->pkt);
            /* A corrupt packet is skipped, as the ffmpeg tool does. */
            if (r < 0 && r != AVERROR(EAGAIN) && r != AVERROR_INVALIDDATA) {
                av_packet_unref(d->pkt);
                return av_fail(err, SHRUTI_ERR_AUDIO, "cannot decode audio", r);
            }
            if ((r = drain_decoder(d, err)) < 0) {
                av_packet_unref(d->pkt);
                return r;
            }
        }
        av_packet_unref(d->pkt);
    }
    if (r != AVERROR_EOF && d->out.n == 0)
        return av_fail(err, SHRUTI_ERR_AUDIO, "cannot read the input", r);
    avcodec_send_packet(d->dec, NULL);
    if ((r = drain_decoder(d, err)) < 0) return r;
    if (d->swr && (r = convert(d, NULL, err)) < 0) return r;
    if (d->out.n == 0) return sh_error(err, SHRUTI_ERR_AUDIO, "the input holds no audio samples");
    return 0;
}

static void decoder_close(decoder *d) {
    av_frame_free(&d->frame);
    av_packet_free(&d->pkt);
    swr_free(&d->swr);
    avcodec_free_context(&d->dec);
    avformat_close_input(&d->fmt);
    if (d->avio) {
        av_freep(&d->avio->buffer);
        avio_context_free(&d->avio);
    }
    free(d->out.s16);
}

static int load(const char *path, memory_source *mem, float **pcm, size_t *n_samples,
                shruti_error *err) {
    sh_error_clear(err);
    *pcm = NULL;
    *n_samples = 0;
    av_log_set_level(AV_LOG_QUIET);   /* errors are reported through err */
    decoder d;
    memset(&d, 0, sizeof d);
    int r = open_input(&d, path, mem, err);
    if (r == 0) r = decode_all(&d, err);
    if (r == 0) {
        float *f = malloc(d.out.n * sizeof *f);
        if (!f) {
            r = sh_error(err, SHRUTI_ERR_NOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < d.out.n; i++) f[i] = (float)d.out.s16[i] / 32768.0f;
            *pcm = f;
            *n_samples = d.out.n;
        }
    }
    decoder_close(&d);
    return r;
}

int shruti_audio_load(const char *path, float **pcm, size_t *n_samples, shruti_error *err) {
    if (!path || !pcm || !n_samples)
        return sh_error(err, SHRUTI_ERR_INVALID_ARG, "no audio path given");
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) {
        *pcm = NULL;
        *n_samples = 0;
        return sh_error(err, SHRUTI_ERR_AUDIO, "the file is empty");
    }
    return load(path, NULL, pcm, n_samples, err);
}

int shruti_audio_load_memory(const void *data, size_t size, float **pcm, size_t *n_samples,
                             shruti_error *err) {
    if (!data || !pcm || !n_samples)
        return sh_error(err, SHRUTI_ERR_INVALID_ARG, "no audio data given");
    if (size == 0) return sh_error(err, SHRUTI_ERR_AUDIO, "the input is empty");
    memory_source mem = {data, size, 0};
    return load(NULL, &mem, pcm, n_samples, err);
}
