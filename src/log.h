/* log.h — one line per event, to stderr or syslog.
 *
 * In the manner of OpenSMTPD: the *_warn/fatal variants append strerror(errno),
 * the *x variants do not. fatal() is for start-up only: once the event loop runs,
 * bad input costs one stream, never the process. */
#ifndef PT_LOG_H
#define PT_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARNING, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_init(enum log_level level, int use_syslog, const char *ident);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int  log_level_parse(const char *name, enum log_level *out);   /* 0 or -1 */

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define log_debug(...)  do { if (log_get_level() >= LOG_LVL_DEBUG) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)   log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warnx(...)  log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_error(...)  log_msg(LOG_LVL_ERROR, __VA_ARGS__)

#endif
