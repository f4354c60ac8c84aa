// Room page of kinds without a media part of their own: presence only.
import { RoomPage } from "./room-page.js";

new RoomPage().connect();
