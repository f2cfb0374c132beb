/* web_page.h - the upload page served at /. */
#ifndef SHRUTI_SERVER_WEB_PAGE_H
#define SHRUTI_SERVER_WEB_PAGE_H

extern const char SV_WEB_PAGE[];

#endif
