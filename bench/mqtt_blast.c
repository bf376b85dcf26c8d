/* mqtt_blast: a compiled MQTT 3.1.1 QoS 1 publisher for bench/ingest.py.
 *
 * Why not mosquitto_pub -l: it reads one message per line with fgets() and measures it with
 * strlen(), so a payload must hold neither 0x0a nor 0x00. Every CBOR telemetry payload holds
 * 0x00 (its millisecond timestamp is a 64-bit integer with zero high bytes), so CBOR cannot
 * go through it. This tool reads length-prefixed payloads instead.
 *
 *   mqtt_blast HOST PORT CLIENT_ID USERNAME TOPIC FILE MAX_INFLIGHT   (password in $MQTT_BLAST_PASSWORD)
 *
 * FILE holds records of [4-byte big-endian length][payload]. Each is sent as a QoS 1
 * PUBLISH; at most MAX_INFLIGHT are unacknowledged at once (like mosquitto_pub -M). It exits
 * 0 once every PUBACK is in, else 1 with one line on stderr. Plain C, no library: only
 * CONNECT, PUBLISH, PUBACK and DISCONNECT are needed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "mqtt_blast: %s: %s\n", what, errno ? strerror(errno) : "protocol error");
    exit(1);
}

static size_t put_str(unsigned char *p, const char *s) {
    size_t n = strlen(s);
    p[0] = (unsigned char)(n >> 8);
    p[1] = (unsigned char)n;
    memcpy(p + 2, s, n);
    return n + 2;
}

static size_t put_len(unsigned char *p, size_t len) { /* MQTT remaining length */
    size_t i = 0;
    do {
        unsigned char b = len % 128;
        len /= 128;
        p[i++] = (unsigned char)(b | (len ? 0x80 : 0));
    } while (len);
    return i;
}

static void send_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, 0);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: mqtt_blast HOST PORT CLIENT_ID USERNAME TOPIC FILE MAX_INFLIGHT\n");
        return 2;
    }
    const char *password = getenv("MQTT_BLAST_PASSWORD");
    const char *topic = argv[5];
    long max_inflight = atol(argv[7]);
    if (max_inflight < 1 || max_inflight > 65000) max_inflight = 1000;

    FILE *f = fopen(argv[6], "rb");
    if (!f) die(argv[6]);
    struct stat st;
    if (fstat(fileno(f), &st) != 0) die("stat");
    unsigned char *data = malloc((size_t)st.st_size + 1);
    if (!data || fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) die("read payload file");
    fclose(f);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (fd < 0 || inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) die("address");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    /* CONNECT: MQTT 3.1.1, clean session, keepalive 0 (a bench run is short), username + password */
    unsigned char body[1024], pkt[1100];
    size_t b = 0;
    b += put_str(body + b, "MQTT");
    body[b++] = 4;
    body[b++] = (unsigned char)(0x02 | 0x80 | (password ? 0x40 : 0));
    body[b++] = 0;
    body[b++] = 0;
    if (strlen(argv[3]) + strlen(argv[4]) + (password ? strlen(password) : 0) > 900) die("credentials too long");
    b += put_str(body + b, argv[3]);
    b += put_str(body + b, argv[4]);
    if (password) b += put_str(body + b, password);
    size_t n = 0;
    pkt[n++] = 0x10;
    n += put_len(pkt + n, b);
    memcpy(pkt + n, body, b);
    send_all(fd, pkt, n + b);
    unsigned char connack[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t r = recv(fd, connack + got, 4 - got, 0);
        if (r <= 0) die("CONNACK");
        got += (size_t)r;
    }
    if (connack[0] != 0x20 || connack[3] != 0) {
        errno = 0;
        fprintf(stderr, "mqtt_blast: connection refused, return code %d\n", connack[3]);
        return 1;
    }

    size_t topic_len = strlen(topic);
    size_t out_cap = 1 << 20;
    unsigned char *out = malloc(out_cap);
    unsigned char in[65536];
    size_t in_have = 0, out_len = 0, out_off = 0, pos = 0;
    long sent = 0, acked = 0;
    uint16_t mid = 0;
    int eof = 0;
    while (!eof || acked < sent) {
        /* fill the output buffer while the in-flight window allows */
        while (!eof && sent - acked < max_inflight && out_len + 8192 < out_cap) {
            if (pos + 4 > (size_t)st.st_size) {
                eof = 1;
                break;
            }
            uint32_t len = ((uint32_t)data[pos] << 24) | ((uint32_t)data[pos + 1] << 16) |
                           ((uint32_t)data[pos + 2] << 8) | data[pos + 3];
            if (len > 4096 || pos + 4 + len > (size_t)st.st_size) {
                errno = 0;
                die("payload file (bad record length)");
            }
            mid = (uint16_t)(mid % 65535 + 1);
            unsigned char *p = out + out_len;
            *p++ = 0x32; /* PUBLISH, QoS 1 */
            p += put_len(p, 2 + topic_len + 2 + len);
            p += put_str(p, topic);
            *p++ = (unsigned char)(mid >> 8);
            *p++ = (unsigned char)mid;
            memcpy(p, data + pos + 4, len);
            p += len;
            out_len = (size_t)(p - out);
            pos += 4 + len;
            sent++;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN | (out_off < out_len ? POLLOUT : 0)};
        if (poll(&pfd, 1, 30000) <= 0) die("poll (no PUBACK within 30 s)");
        if (pfd.revents & (POLLERR | POLLHUP) && !(pfd.revents & POLLIN)) die("connection closed");
        if (pfd.revents & POLLOUT) {
            ssize_t w = send(fd, out + out_off, out_len - out_off, MSG_DONTWAIT);
            if (w < 0 && errno != EAGAIN && errno != EINTR) die("send");
            if (w > 0) out_off += (size_t)w;
            if (out_off == out_len) out_off = out_len = 0;
        }
        if (pfd.revents & POLLIN) {
            ssize_t r = recv(fd, in + in_have, sizeof in - in_have, MSG_DONTWAIT);
            if (r == 0) {
                errno = 0;
                die("broker closed the connection");
            }
            if (r < 0 && errno != EAGAIN && errno != EINTR) die("recv");
            if (r > 0) in_have += (size_t)r;
            size_t i = 0;
            while (in_have - i >= 4) { /* only PUBACKs (0x40 0x02 id id) come back on this connection */
                if (in[i] != 0x40 || in[i + 1] != 0x02) {
                    errno = 0;
                    die("unexpected packet from the broker");
                }
                acked++;
                i += 4;
            }
            memmove(in, in + i, in_have - i);
            in_have -= i;
        }
    }
    unsigned char disconnect[2] = {0xe0, 0x00};
    send_all(fd, disconnect, 2);
    close(fd);
    return 0;
}
